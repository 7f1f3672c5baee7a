// task-notifications.mjs — the ES module face of task-notifications.js (one source: this file
// only imports that script, which defines the client, and re-exports it). No bundler needed:
//
//   <script type="module">
//     import taskNotifications from '/static/herald/task-notifications.mjs';
//     taskNotifications.on('user_message', (m) => console.log(m.message));
//   </script>
//
// The import also sets `window.taskNotifications` (the guide's inline handlers keep working),
// and a page that has the <script> tag too shares the same client and socket.
// Types: task-notifications.d.ts.
import './task-notifications.js';

const taskNotifications = globalThis.taskNotifications;

export { taskNotifications };
export default taskNotifications;
