// A front-end build importing the client as an ES module: every member of the API, typed.
import taskNotifications, {
  taskNotifications as named,
  type ClosePolicy,
  type FileInfo,
  type TaskNotificationsState,
} from 'herald-task-notifications';

const same: boolean = taskNotifications === named;
const state: TaskNotificationsState = taskNotifications.state;
const version: string = taskNotifications.version;
const marker: true = taskNotifications.__herald;
const ws: WebSocket | null = taskNotifications.ws;

taskNotifications
  .configure({
    url: 'wss://app.example.com/ws/tasks/',
    path: '/ws/tasks/',
    autoConnect: false,
    reconnect: true,
    initialDelay: 500,
    maxDelay: 20000,
    connectTimeout: 8000,
    heartbeatInterval: 15000,
    heartbeatTimeout: 5000,
    probeUrl: false,
    maxRefusals: 2,
    toastDuration: 0,
    styleNonce: 'n0nce',
    log: false,
    transport: 'auto',
    sseUrl: 'https://app.example.com/sse/tasks/',
    ssePath: '/sse/tasks/',
    sseAfter: 3,
    ui: {
      info: (message: string, title: string) => console.log(message, title),
      success: false,
      file: (f: FileInfo) => console.log(f.fileName, f.sizeText, f.url, f.size, f.data.file_url),
    },
  })
  .on('open', (e) => console.log(e.url))
  .on('close', (e) => console.log(e.code, e.reason, e.wasClean))
  .on('reconnecting', (e) => console.log(e.attempt, e.delay))
  .on('unauthorized', (e) => console.log(e.code, e.reason, e.refusals))
  .on('state', (e) => console.log(e.previous, '->', e.state))
  .on('transport', (e) => console.log(e.transport))
  .on('user_notification', (m) => console.log(m.notification_type, m.message, m.title))
  .on('user_file', (m) => console.log(m.file_url, m.file_size))
  .on('task_update', (m) => console.log(m.task_id, m.progress))
  .on('subscribed', (m) => console.log(m.task_id))
  .on('*', (m) => console.log(m.type))
  .on('my_custom_type', (m) => console.log(m.type, m['anything']))
  .subscribeTask('build-42')
  .subscribeTask(42)
  .unsubscribeTask(42)
  .off('open')
  .connect()
  .close();

const tasks: string[] = taskNotifications.subscribedTasks();
const sent: boolean = taskNotifications.send({ action: 'ping' });
const policy: ClosePolicy = taskNotifications.closePolicy(1013);
const size: string = taskNotifications.formatFileSize(156789);
const toast: HTMLElement | null = taskNotifications.toast('success', 'Saved', 'Done');
const modal: HTMLElement | null = taskNotifications.showFile({ type: 'user_file', file_url: '/media/a.csv' });
const heartbeat: number = taskNotifications.options().heartbeatInterval;
const transport: 'websocket' | 'sse' = taskNotifications.transport;

// The declarations are strict: each of these must be a type error.
// @ts-expect-error an 'open' event has no code
taskNotifications.on('open', (e) => e.code);
// @ts-expect-error durations are numbers
taskNotifications.configure({ heartbeatInterval: '20s' });
// @ts-expect-error no such option
taskNotifications.configure({ heartbeat: true });
// @ts-expect-error not a toast kind
taskNotifications.toast('fatal', 'x');
// @ts-expect-error not a transport
taskNotifications.configure({ transport: 'long-polling' });
// @ts-expect-error state is read-only
taskNotifications.state = 'open';

export { same, state, version, marker, ws, tasks, sent, policy, size, toast, modal, heartbeat, transport };
