"""The minimal /ws/tasks/ consumer described by the WebSocket user messaging guide.

An authenticated socket joins the group ``user_{username}`` and every ``user.message``,
``user.notification`` or ``user.file`` event sent to that group is forwarded to the browser as
JSON, with ``type`` written the way the frontend listens for it (``user_message``, ...).
Anonymous sockets are refused (HTTP 403 from Daphne).

``task.update``, ``task.complete`` and ``task.error`` (the guide's Celery progress events) are
forwarded the same way, from whichever group they arrive on, as herald's consumer does.

``{"action": "subscribe", "task_id": ID}`` joins ``task_{ID}`` and answers
``{"type": "subscribed", "task_id": ID}``, as herald's consumer does: the reconnect benchmarks
use a task group as the broadcast group every socket joins.
"""
from channels.generic.websocket import AsyncJsonWebsocketConsumer


class TaskConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close()
            return
        self.user_group = f"user_{user.username}"
        self.task_groups = set()
        await self.channel_layer.group_add(self.user_group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        group = getattr(self, "user_group", None)
        if group is not None:
            await self.channel_layer.group_discard(group, self.channel_name)
        for task_group in getattr(self, "task_groups", ()):
            await self.channel_layer.group_discard(task_group, self.channel_name)

    async def receive_json(self, content, **kwargs):
        # The page may ping to keep proxies from closing an idle socket.
        if content.get("type") == "ping":
            await self.send_json({"type": "pong"})
        elif content.get("action") == "subscribe" and "task_id" in content:
            group = f"task_{content['task_id']}"
            await self.channel_layer.group_add(group, self.channel_name)
            self.task_groups.add(group)
            await self.send_json({"type": "subscribed", "task_id": content["task_id"]})

    async def _forward(self, event):
        await self.send_json({**event, "type": event["type"].replace(".", "_")})

    async def user_message(self, event):
        await self._forward(event)

    async def user_notification(self, event):
        await self._forward(event)

    async def user_file(self, event):
        await self._forward(event)

    async def task_update(self, event):
        await self._forward(event)

    async def task_complete(self, event):
        await self._forward(event)

    async def task_error(self, event):
        await self._forward(event)
