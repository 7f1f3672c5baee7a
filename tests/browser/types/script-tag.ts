// A page that loads the client with a <script> tag: the global and the pre-load config.
import type {} from 'herald-task-notifications';

window.taskNotificationsConfig = { autoConnect: false, heartbeatInterval: 0 };
window.taskNotifications.on('user_message', (m) => console.log(m.message));
taskNotifications.subscribeTask('abc');
const open: boolean = taskNotifications.state === 'open' && taskNotifications.ws?.readyState === 1;
// @ts-expect-error subscribeTask takes a string or a number
taskNotifications.subscribeTask({ id: 1 });

export { open };
