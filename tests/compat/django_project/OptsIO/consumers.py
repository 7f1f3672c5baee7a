from channels.generic.websocket import AsyncJsonWebsocketConsumer


class TaskNotificationConsumer(AsyncJsonWebsocketConsumer):
    """/ws/tasks/: authenticated users join `user_{username}`; every event is forwarded as JSON."""

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

    async def forward(self, event):
        await self.send_json(event)

    user_message = forward
    user_notification = forward
    user_file = forward
    task_update = forward
    task_complete = forward
