import json

from channels.generic.websocket import AsyncJsonWebsocketConsumer


class TaskNotificationConsumer(AsyncJsonWebsocketConsumer):
    """/ws/tasks/: authenticated users join `user_{username}`; every event is forwarded as JSON.

    Client frames follow Herald's /ws/tasks/ protocol (subscribe / unsubscribe to `task_{id}`,
    ping, error frames), written the plain Python way so that comparison tests see what Python's
    own `json.loads`, f-strings, Channels' group-name check and `json.dumps` make of a frame.
    """

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close()
            return
        self.group = f"user_{user.get_username()}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def error(self, message):
        await self.send_json({"type": "error", "message": message})

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        if text_data is None:
            await self.error("binary frames are not supported")
            return
        try:
            content = json.loads(text_data)
        except ValueError:
            await self.error("invalid JSON")
            return
        if not isinstance(content, dict):
            await self.error("expected a JSON object")
            return
        action = content.get("action")
        if action in ("subscribe", "unsubscribe"):
            task_id = content.get("task_id")
            if isinstance(task_id, bool) or not isinstance(task_id, (str, int, float)):
                await self.error("task_id must be a string or a number")
                return
            group = f"task_{task_id}"
            try:
                self.channel_layer.require_valid_group_name(group)
            except TypeError:
                await self.error("invalid task_id")
                return
            if task_id == "":
                await self.error("invalid task_id")
                return
            if action == "subscribe":
                await self.channel_layer.group_add(group, self.channel_name)
            else:
                await self.channel_layer.group_discard(group, self.channel_name)
            await self.send_json({"type": f"{action}d", "task_id": task_id})
        elif action == "ping":
            await self.send_json({"type": "pong"})
        else:
            await self.error("unknown action")

    async def forward(self, event):
        await self.send_json(event)

    user_message = forward
    user_notification = forward
    user_file = forward
    task_update = forward
    task_complete = forward
