// Types for task-notifications.js (script tag: the global `taskNotifications`) and
// task-notifications.mjs (ES module: default and named export `taskNotifications`).

/** Connection states; `state` events report every change. */
export type TaskNotificationsState =
  | 'idle' // not started (autoConnect: false, connect() not called yet)
  | 'connecting' // handshake in flight
  | 'open'
  | 'reconnecting' // waiting out a backoff delay
  | 'closed' // a socket just closed, or close() was called
  | 'offline' // the browser is offline: waits for its 'online' event
  | 'suspended' // the page was frozen or hidden (freeze, pagehide): waits for resume / pageshow
  | 'unauthorized'; // refused: waits for connect() or the user coming back to the tab

/**
 * What the client does after a close code: `retry` (backoff, restarted after a served
 * session), `backoff` (the backoff keeps growing), `reauth` (stop, `unauthorized`, retry after
 * re-login), `stop` (no retry until `connect()`).
 */
export type ClosePolicy = 'retry' | 'backoff' | 'reauth' | 'stop';

/** Frames the server sends (`type` in handler form); other fields as the sender wrote them. */
export interface ServerFrame {
  type: string;
  [field: string]: unknown;
}

export interface UserMessageFrame extends ServerFrame {
  type: 'user_message';
  message: string;
  title?: string;
  username?: string;
  timestamp?: string;
}

export interface UserNotificationFrame extends ServerFrame {
  type: 'user_notification';
  message: string;
  notification_type: 'success' | 'error' | 'warning' | 'info' | string;
  title?: string;
  username?: string;
  timestamp?: string;
}

export interface UserFileFrame extends ServerFrame {
  type: 'user_file';
  file_url: string;
  file_name?: string;
  file_size?: number | null;
  message?: string;
  username?: string;
  timestamp?: string;
}

export interface TaskFrame extends ServerFrame {
  type: 'task_update' | 'task_complete' | 'task_error';
  task_id?: string | number;
  progress?: number;
  status?: string;
  message?: string;
}

export interface SubscriptionFrame extends ServerFrame {
  type: 'subscribed' | 'unsubscribed';
  task_id: string | number;
}

export interface ErrorFrame extends ServerFrame {
  type: 'error';
  message: string;
}

export interface PongFrame extends ServerFrame {
  type: 'pong';
}

export interface OpenEvent {
  url: string;
}

export interface CloseEvent {
  /** The close code; 4000 when the client gave up on a silent link (heartbeat or connect timeout). */
  code: number;
  reason: string;
  wasClean: boolean;
}

export interface ReconnectingEvent {
  attempt: number;
  /** Milliseconds until the next attempt. */
  delay: number;
}

export interface UnauthorizedEvent {
  /** 1006 for refused handshakes, or the close code (4401) the server sent. */
  code: number;
  reason: string;
  /** Consecutive handshakes a reachable server refused. */
  refusals: number;
}

/** Herald's answer for one group after a resume (or a subscribe with `since`). */
export interface ResumedEvent {
  /** `user_<name>` or `task_<id>`. */
  group: string;
  /** false: the history no longer covers what the client missed (then also `resync`). */
  recovered: boolean;
  /** The position the client keeps for the group; null when Herald records no history for it. */
  epoch: string | null;
  offset: string | null;
}

/** The client fell back to Server-Sent Events (WebSocket handshakes kept failing). */
export interface TransportEvent {
  transport: 'sse';
}

export interface StateEvent {
  state: TaskNotificationsState;
  previous: TaskNotificationsState;
}

/** Handler argument per event name; any other name gets a server frame. */
export interface TaskNotificationsEventMap {
  open: OpenEvent;
  close: CloseEvent;
  reconnecting: ReconnectingEvent;
  unauthorized: UnauthorizedEvent;
  state: StateEvent;
  /** Every `herald.resumed` answer (the frame itself is not handed to '*' or its type). */
  resumed: ResumedEvent;
  /** Messages of `group` were missed for good (e.g. Redis restarted): refetch the page's state. */
  resync: ResumedEvent;
  transport: TransportEvent;
  '*': ServerFrame;
  user_message: UserMessageFrame;
  user_notification: UserNotificationFrame;
  user_file: UserFileFrame;
  task_update: TaskFrame;
  task_complete: TaskFrame;
  task_error: TaskFrame;
  subscribed: SubscriptionFrame;
  unsubscribed: SubscriptionFrame;
  error: ErrorFrame;
  pong: PongFrame;
}

/** A `user_file` notice as handed to a custom `ui.file`. */
export interface FileInfo {
  message: string;
  fileName: string;
  size: number | null;
  /** "153.1 KB", or "" without a size. */
  sizeText: string;
  /** Absolute http(s) URL, or null if the frame's URL was anything else. */
  url: string | null;
  data: UserFileFrame;
}

export type ToastKind = 'success' | 'error' | 'warning' | 'info';

export type ToastFn = (message: string, title: string, frame?: ServerFrame) => unknown;

/** Replacements for the built-in UI; `false` turns one part off. */
export interface UiOptions {
  info?: ToastFn | false;
  success?: ToastFn | false;
  error?: ToastFn | false;
  warning?: ToastFn | false;
  file?: ((file: FileInfo) => unknown) | false;
}

export interface TaskNotificationsOptions {
  /** Full ws:// or wss:// URL; default: the page's host and `path`. */
  url?: string | null;
  /** Default '/ws/tasks/'. */
  path?: string;
  /** Connect on DOMContentLoaded (default true). */
  autoConnect?: boolean;
  /** Reconnect after a close (default true). */
  reconnect?: boolean;
  /** Backoff: min(maxDelay, initialDelay * 2^attempt) with equal jitter (ms; 1000, 30000). */
  initialDelay?: number;
  maxDelay?: number;
  /** Give up on a handshake still pending after this many ms (default 10000; 0 = never). */
  connectTimeout?: number;
  /** Ping after this many ms without a frame (default 20000; 0 = no heartbeat). */
  heartbeatInterval?: number;
  /** Drop the link if no frame arrives this many ms after a ping (default 10000). */
  heartbeatTimeout?: number;
  /**
   * URL whose 2xx answer to a HEAD proves the server is up after a failed handshake (default:
   * the client script on the socket's host); same-origin or CORS. false = never conclude "refused".
   */
  probeUrl?: string | false | null;
  /** Refusals in a row before 'unauthorized' (default 3). */
  maxRefusals?: number;
  /** Toast lifetime in ms (default 5000; 0 = until clicked). */
  toastDuration?: number;
  /** The built-in UI, replacements, or false for none. */
  ui?: UiOptions | false | null;
  /** Nonce for the injected <style> element under a strict CSP. */
  styleNonce?: string | null;
  /** Log connection changes to the console (default true). */
  log?: boolean;
  /**
   * Missed-message recovery (default true): connect with `?recover=1`, resume every group
   * from its last position on each connect, emit `resync` when a gap cannot be filled.
   * false = the plain protocol.
   */
  recover?: boolean;
  /**
   * sessionStorage key for the positions (default null: derived from the socket URL, so the
   * pages of one site share them within a tab); false = keep them in memory only.
   */
  storageKey?: string | false | null;
  /**
   * 'auto' (default): WebSocket, and Server-Sent Events after `sseAfter` failed WebSocket
   * handshakes in a row while the event stream answers (emits `transport`). 'websocket': never
   * fall back. 'sse': the event stream only. Over SSE, (un)subscribing reopens the stream,
   * `send()` returns false and there is no heartbeat ping.
   */
  transport?: 'auto' | 'websocket' | 'sse';
  /** Full http(s):// URL of the event stream; default: the socket's host and `ssePath`. */
  sseUrl?: string | null;
  /** Path of the event stream (default '/sse/tasks/'). */
  ssePath?: string;
  /** Failed WebSocket handshakes in a row before 'auto' tries the event stream (default 2). */
  sseAfter?: number;
}

export interface TaskNotifications {
  /** Always true: marks the instance (a second copy of the script keeps the first). */
  readonly __herald: true;
  readonly version: string;
  /**
   * The current WebSocket (readyState 1 = open), or over SSE an object with the same
   * readyState/url/close(); null before the first connect.
   */
  readonly ws: WebSocket | null;
  /** The transport of the current (or next) link. */
  readonly transport: 'websocket' | 'sse';
  readonly state: TaskNotificationsState;

  on<K extends keyof TaskNotificationsEventMap>(
    type: K,
    fn: (this: TaskNotifications, event: TaskNotificationsEventMap[K]) => void
  ): TaskNotifications;
  on(type: string, fn: (this: TaskNotifications, frame: ServerFrame) => void): TaskNotifications;
  off<K extends keyof TaskNotificationsEventMap>(
    type: K,
    fn?: (this: TaskNotifications, event: TaskNotificationsEventMap[K]) => void
  ): TaskNotifications;
  off(type: string, fn?: (this: TaskNotifications, frame: ServerFrame) => void): TaskNotifications;

  /** Subscribes to task_{id} (sent as a string, remembered and re-sent after reconnects). */
  subscribeTask(taskId: string | number): TaskNotifications;
  unsubscribeTask(taskId: string | number): TaskNotifications;
  subscribedTasks(): string[];

  /** Sends a JSON frame if the socket is open; true if sent (always false over SSE). */
  send(frame: object): boolean;
  /** Connects now; also resumes after close(), a 4403 close or 'unauthorized'. */
  connect(): TaskNotifications;
  /** Closes with 1000 and stops reconnecting. */
  close(): TaskNotifications;

  configure(options: TaskNotificationsOptions): TaskNotifications;
  options(): Required<TaskNotificationsOptions>;
  closePolicy(code: number): ClosePolicy;

  /** "153.1 KB" for 156789; "" for a missing or invalid size. */
  formatFileSize(bytes: number | null | undefined): string;
  toast(kind: ToastKind, message: string, title?: string): HTMLElement | null;
  showFile(frame: UserFileFrame): HTMLElement | null;
}

declare global {
  interface Window {
    taskNotifications: TaskNotifications;
    /** Options read once when the script loads. */
    taskNotificationsConfig?: TaskNotificationsOptions;
  }
  // eslint-disable-next-line no-var
  var taskNotifications: TaskNotifications;
  // eslint-disable-next-line no-var
  var taskNotificationsConfig: TaskNotificationsOptions | undefined;
}

export const taskNotifications: TaskNotifications;
export default taskNotifications;
