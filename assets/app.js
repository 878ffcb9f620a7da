'use strict';
// Tessera web client, meant to stay open for hours: joins a room with one peer connection
// (camera + microphone up, composite + mix-minus down), keeps the room's state from the events
// on its data channel (no polling), rejoins by itself when the connection fails, switches camera
// and microphone while joined, chats, mutes, shares a screen over a second peer connection and,
// for admins, picks the layout, mutes / kicks participants and starts recordings and egress.
//
// Test hooks: `window.tessera`, one object mutated in place so references stay valid.
//   state         'idle' | 'joining' | 'connected' | 'reconnecting' | 'left' | 'error'
//   error         the reason while state is 'error' (a refusal that a retry cannot fix)
//   pc, dc        the current RTCPeerConnection and its room-events data channel
//   location      the current participant resource (absolute URL); me: its id; room: the room
//   stats         {framesDecoded, frameWidth, frameHeight, fps, audioPackets} of the current pc
//   chat, events  chat events / the last 200 room events, as received
//   participants  [{id, name, source, kind, muted: {audio, video}}], kept from the events
//   layout        the room's layout ({layout, ...}); speaker: the active speaker's id
//   outputs       {id: state} of recordings (`rec…`) and egresses (`eg…`), from recording_state
//   muted         own {audio, video}
//   screen        {pc, location, stream, id} while sharing the screen
//   config        GET /v1/config as received (null until then); auth: its `auth`
//   admin         whether the admin controls are shown (no auth, or the token's admin grant)
//   devices       {cameras: [{deviceId, label}], mics: [...], camera, mic}: the devices offered
//                 and the chosen ids ('' = the browser's default), remembered in localStorage
//   reconnect     {attempt, delayMs, reason, rejoins}: consecutive failed attempts (reset after
//                 20 s connected), the pending wait (0: none), why, and rejoins since Join
//   roomFetches   GET /v1/rooms/{room} made (one per welcome without mute state, none polled)
//   sendChat(text) → bool; setLayout(obj) → Promise<HTTP status>; setDevice(kind, deviceId) →
//   Promise<bool> (kind 'videoinput' | 'audioinput'); mute(id, {audio?, video?}) and kick(id)
//   → Promise<HTTP status>; startRecording(format), stopRecording(id), startEgress(url),
//   stopEgress(id) → Promise<HTTP status>
const $ = (id) => document.getElementById(id);
const qs = new URLSearchParams(location.search);
$('room').value = qs.get('room') || 'demo';
$('name').value = qs.get('name') || 'guest-' + Math.random().toString(36).slice(2, 6).padEnd(4, '0');
const token = qs.get('token') || null;

const tessera = window.tessera = {
  pc: null, dc: null, state: 'idle', location: null, room: null, error: null, me: null,
  stats: { framesDecoded: 0, frameWidth: 0, frameHeight: 0, fps: 0, audioPackets: 0 },
  chat: [], events: [], layout: null, speaker: null, participants: [], outputs: {},
  muted: { audio: false, video: false },
  screen: null, config: null, auth: null, admin: false,
  devices: { cameras: [], mics: [], camera: '', mic: '' },
  reconnect: { attempt: 0, delayMs: 0, reason: null, rejoins: 0 },
  roomFetches: 0,
  sendChat, setLayout, setDevice, mute: serverMute, kick, startRecording, stopRecording, startEgress, stopEgress,
};

/** Backoff between rejoin attempts: 1, 2, 4 … 30 s. */
const BACKOFF_MS = (attempt) => Math.min(30000, 1000 * 2 ** (attempt - 1));
/** Connected this long resets the backoff (a connection that fails at once keeps backing off). */
const STABLE_MS = 20000;
/** `disconnected` this long is treated as failed (browsers take ~30 s to say `failed`). */
const DISCONNECTED_MS = 10000;
/** Join refusals a retry cannot fix: bad request or token, no common codec. 409 (room full),
 * 5xx and network errors are retried. */
const FATAL_STATUS = new Set([400, 401, 403, 413, 415, 422]);

let localStream = null; // camera + microphone, kept across rejoins, stopped on Leave
let wantJoined = false; // between Join and Leave (or a kick / the room ending / a fatal refusal)
let joinGen = 0;        // bumped whenever a session ends, so a stale connect() or handler backs off
let statsTimer = null, reconnectTimer = null, countdownTimer = null, stableTimer = null, discTimer = null;
let lastFrames = null;
let muteSeq = {};       // participant id → bumped by mute_changed (the room JSON must not undo it)

// --- helpers -----------------------------------------------------------------------------
function authHeaders(extra) {
  const h = Object.assign({}, extra || {});
  if (token) h.Authorization = 'Bearer ' + token;
  return h;
}
function api(path, opts) {
  opts = Object.assign({ cache: 'no-store' }, opts || {});
  opts.headers = authHeaders(opts.headers);
  return fetch(path, opts);
}
function apiJson(method, path, body) {
  return api(path, { method, headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
}
const roomPath = (room) => '/v1/rooms/' + encodeURIComponent(room || tessera.room || $('room').value.trim());

// The token's claims, only to decide what to show (the server checks them).
function tokenClaims() {
  if (!token) return null;
  try {
    const b = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(b + '='.repeat((4 - b.length % 4) % 4)));
  } catch (_) { return null; }
}
// Admin controls: a server without auth lets anyone control the room; else the admin grant.
function computeAdmin() {
  const claims = tokenClaims();
  return tessera.auth === false || !!(claims && claims.grants && claims.grants.admin);
}

function setStatus(state, detail) {
  tessera.state = state;
  tessera.error = state === 'error' ? detail : null;
  const el = $('status');
  el.textContent = state === 'error' ? 'error: ' + detail : detail ? state + ' (' + detail + ')' : state;
  el.className = state === 'error' ? 'err' : state === 'connected' ? 'ok' : state === 'reconnecting' ? 'warn' : '';
}
function notice(msg) { $('notice').textContent = msg || ''; }
async function failText(r) {
  const t = (await r.text().catch(() => '')).trim();
  return 'HTTP ' + r.status + (t ? ': ' + t : '');
}

// GET /v1/config: ICE servers, whether tokens are needed, whether to publish simulcast. Fetched
// at load and before every (re)join, so TURN credentials stay fresh.
async function fetchConfig() {
  try {
    const r = await fetch('/v1/config', { cache: 'no-store' });
    if (!r.ok) return tessera.config;
    const j = await r.json();
    tessera.config = j;
    tessera.auth = !!j.auth;
  } catch (_) { /* keep the last one */ }
  showAdmin();
  return tessera.config;
}
const iceServers = () => {
  const s = tessera.config && tessera.config.ice_servers;
  return Array.isArray(s) ? s : [];
};

// The server's codec order (GET /v1/config video_codec_order: H264 first where a GPU encodes it,
// VP8 first on the CPU), then retransmission/FEC helpers; other codecs are left out.
function preferCodecs(transceiver) {
  try {
    if (!transceiver.setCodecPreferences || !RTCRtpReceiver.getCapabilities) return;
    const codecs = RTCRtpReceiver.getCapabilities('video').codecs;
    const order = (tessera.config && Array.isArray(tessera.config.video_codec_order))
      ? tessera.config.video_codec_order : ['vp8', 'h264'];
    const rank = (c) => {
      const m = c.mimeType.toLowerCase();
      const i = order.indexOf(m.replace('video/', ''));
      return i >= 0 ? i : /rtx|red|ulpfec/.test(m) ? order.length : 9;
    };
    const sorted = codecs.filter((c) => rank(c) < 9).sort((a, b) => rank(a) - rank(b));
    if (sorted.length) transceiver.setCodecPreferences(sorted);
  } catch (e) { console.warn('setCodecPreferences failed', e); }
}

// Resolve when ICE gathering completes or after timeoutMs, whichever first.
function waitForIce(pc, timeoutMs) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { clearTimeout(t); pc.removeEventListener('icegatheringstatechange', check); resolve(); };
    const check = () => { if (pc.iceGatheringState === 'complete') done(); };
    const t = setTimeout(done, timeoutMs);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

// Offer, wait for gathering (a complete offer, no trickle), POST it; returns the absolute
// Location and the answer. A refusal throws an Error with `status` (0: no HTTP answer).
async function negotiate(pc, url) {
  await pc.setLocalDescription(await pc.createOffer());
  await waitForIce(pc, 3000);
  let resp;
  try {
    resp = await api(url, { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: pc.localDescription.sdp });
  } catch (e) {
    throw Object.assign(new Error('server unreachable (' + (e && e.message ? e.message : e) + ')'), { status: 0 });
  }
  const body = await resp.text();
  if (!resp.ok) throw Object.assign(new Error('HTTP ' + resp.status + (body ? ': ' + body.trim() : '')), { status: resp.status });
  const loc = resp.headers.get('Location');
  return { location: loc ? new URL(loc, location.href).href : null, answer: body };
}

// --- devices -------------------------------------------------------------------------------
const DEVICE_KEY = { videoinput: 'tessera.camera', audioinput: 'tessera.mic' };
const deviceField = (kind) => (kind === 'videoinput' ? 'camera' : 'mic');
const deviceSelect = (kind) => $(kind === 'videoinput' ? 'camSel' : 'micSel');
function remembered(kind) {
  try { return localStorage.getItem(DEVICE_KEY[kind]) || ''; } catch (_) { return ''; }
}
function remember(kind, id) {
  try { if (id) localStorage.setItem(DEVICE_KEY[kind], id); else localStorage.removeItem(DEVICE_KEY[kind]); } catch (_) {}
}
tessera.devices.camera = remembered('videoinput');
tessera.devices.mic = remembered('audioinput');

// getUserMedia constraints for `kind` on the chosen device: `exact` when the user picked it just
// now (fail rather than open another), `ideal` for a remembered one (it may be gone).
function constraints(kind, deviceId, exact) {
  const c = kind === 'videoinput' ? simulcastOn() ? { width: 1280, height: 720, frameRate: 30 } : { width: 640, height: 360, frameRate: 30 } : {};
  if (deviceId) c.deviceId = exact ? { exact: deviceId } : { ideal: deviceId };
  return Object.keys(c).length ? c : true;
}
const currentTrack = (kind) => localStream && (kind === 'videoinput' ? localStream.getVideoTracks() : localStream.getAudioTracks())[0];

// Fills the camera and microphone pickers from enumerateDevices (labels appear once the page
// has had media permission) and selects the device in use, else the remembered one.
async function refreshDevices() {
  const md = navigator.mediaDevices;
  if (!md || !md.enumerateDevices) return;
  let list;
  try { list = await md.enumerateDevices(); } catch (_) { return; }
  for (const kind of ['videoinput', 'audioinput']) {
    const devs = list.filter((d) => d.kind === kind && d.deviceId).map((d, i) => ({
      deviceId: d.deviceId, label: d.label || (kind === 'videoinput' ? 'Camera ' : 'Microphone ') + (i + 1),
    }));
    tessera.devices[kind === 'videoinput' ? 'cameras' : 'mics'] = devs;
    const sel = deviceSelect(kind);
    const track = currentTrack(kind);
    const inUse = track && track.getSettings ? track.getSettings().deviceId : null;
    const want = inUse || tessera.devices[deviceField(kind)];
    sel.textContent = '';
    const def = document.createElement('option');
    def.value = ''; def.textContent = devs.length ? 'Default' : 'None found';
    sel.appendChild(def);
    for (const d of devs) {
      const o = document.createElement('option');
      o.value = d.deviceId; o.textContent = d.label;
      sel.appendChild(o);
    }
    sel.value = devs.some((d) => d.deviceId === want) ? want : '';
  }
}

// Chooses the camera ('videoinput') or microphone ('audioinput') `deviceId` ('' = default) and
// remembers it. While joined with a track of that kind, the new device's track replaces the old
// one on the same sender (RTCRtpSender.replaceTrack: no renegotiation, the server sees one
// stream). Resolves to true when the choice is in force (or saved for the next join).
async function setDevice(kind, deviceId, opts) {
  if (!DEVICE_KEY[kind]) return false;
  deviceId = deviceId || '';
  if (!opts || opts.remember !== false) { remember(kind, deviceId); tessera.devices[deviceField(kind)] = deviceId; }
  const old = currentTrack(kind);
  const sender = old && tessera.pc && tessera.pc.getSenders().find((s) => s.track === old);
  if (!old) { await refreshDevices(); return true; } // applies at the next join
  const media = (exact) => navigator.mediaDevices.getUserMedia(
    kind === 'videoinput' ? { video: constraints(kind, deviceId, exact) } : { audio: constraints(kind, deviceId, exact) });
  let fresh;
  try {
    fresh = (await media(!!deviceId)).getTracks()[0];
  } catch (e) {
    if (e && e.name === 'NotReadableError') { // some cameras open only once: release, then retry
      old.stop();
      try { fresh = (await media(!!deviceId)).getTracks()[0]; } catch (e2) { e = e2; }
    }
    if (!fresh) { notice('could not open that device: ' + (e && e.name ? e.name : e)); await refreshDevices(); return false; }
  }
  fresh.enabled = !(kind === 'videoinput' ? tessera.muted.video : tessera.muted.audio);
  try {
    if (sender) await sender.replaceTrack(fresh);
  } catch (e) {
    fresh.stop(); notice('switching device failed: ' + e); return false;
  }
  localStream.removeTrack(old); old.stop();
  localStream.addTrack(fresh);
  watchTrack(fresh);
  if (kind === 'videoinput') $('self').srcObject = new MediaStream([fresh]);
  notice('');
  await refreshDevices();
  return true;
}
for (const kind of ['videoinput', 'audioinput']) {
  deviceSelect(kind).addEventListener('change', () => setDevice(kind, deviceSelect(kind).value));
}
// A device that goes away (unplugged) ends its track: carry on with the default device.
function watchTrack(track) {
  track.addEventListener('ended', () => {
    if (!wantJoined || currentTrack(track.kind === 'video' ? 'videoinput' : 'audioinput') !== track) return;
    notice((track.kind === 'video' ? 'camera' : 'microphone') + ' gone; using the default one');
    setDevice(track.kind === 'video' ? 'videoinput' : 'audioinput', '', { remember: false });
  });
}
if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
  navigator.mediaDevices.addEventListener('devicechange', () => { refreshDevices(); });
}

// --- joining, rejoining and leaving --------------------------------------------------------
const simulcastOn = () => !!(tessera.config && tessera.config.simulcast === true);

async function join() {
  if (wantJoined) return;
  wantJoined = true;
  tessera.room = $('room').value.trim() || 'demo';
  Object.assign(tessera.reconnect, { attempt: 0, delayMs: 0, reason: null, rejoins: 0 });
  tessera.chat.length = 0; tessera.events.length = 0; $('chatlog').textContent = '';
  Object.assign(tessera.muted, { audio: false, video: false });
  tessera.outputs = {};
  notice('');
  setUi(true);
  await fetchConfig();
  if (!wantJoined) return;
  const wantVideo = $('sendVideo').checked, wantAudio = $('sendAudio').checked;
  let note = '';
  if (wantVideo || wantAudio) {
    try {
      localStream = await navigator.mediaDevices.getUserMedia({
        video: wantVideo ? constraints('videoinput', tessera.devices.camera, false) : false,
        audio: wantAudio ? constraints('audioinput', tessera.devices.mic, false) : false,
      });
      localStream.getTracks().forEach(watchTrack);
    } catch (e) { // No devices / permission denied: join as a viewer.
      note = 'media unavailable (' + e.name + '), joining as viewer';
      console.warn(note, e);
    }
    if (!wantJoined) { stopLocal(); return; }
    refreshDevices();
  }
  const cam = currentTrack('videoinput');
  if (cam) { $('self').srcObject = new MediaStream([cam]); $('self').hidden = false; }
  if (note) notice(note);
  connect();
}

// One attempt at a session: a new peer connection, offer, POST, answer. Failing (or failing
// later) hands over to connectionLost, which schedules the next attempt.
async function connect() {
  const gen = ++joinGen;
  const r = tessera.reconnect;
  setStatus(r.attempt ? 'reconnecting' : 'joining', r.attempt ? 'attempt ' + (r.attempt + 1) : '');
  const room = tessera.room, name = $('name').value.trim() || 'guest';
  try {
    if (r.attempt) await fetchConfig();
    if (gen !== joinGen) return;
    const camTrack = currentTrack('videoinput'), micTrack = currentTrack('audioinput');
    const pc = tessera.pc = new RTCPeerConnection({ iceServers: iceServers(), bundlePolicy: 'max-bundle' });
    let vt;
    if (camTrack && simulcastOn()) {
      vt = pc.addTransceiver(camTrack, { direction: 'sendrecv', streams: [localStream], sendEncodings: [
        { rid: 'q', scaleResolutionDownBy: 4 }, { rid: 'h', scaleResolutionDownBy: 2 }, { rid: 'f', scaleResolutionDownBy: 1 },
      ] });
    } else if (camTrack) {
      vt = pc.addTransceiver(camTrack, { direction: 'sendrecv', streams: [localStream] });
    } else {
      vt = pc.addTransceiver('video', { direction: 'recvonly' });
    }
    preferCodecs(vt);
    if (micTrack) pc.addTransceiver(micTrack, { direction: 'sendrecv', streams: [localStream] });
    else pc.addTransceiver('audio', { direction: 'recvonly' });
    // Room events: the channel must exist before the offer so it has an m=application section.
    const dc = tessera.dc = pc.createDataChannel('tessera');
    dc.onopen = () => { if (tessera.dc === dc) setChatUi(true); };
    dc.onclose = () => {
      if (tessera.dc !== dc) return;
      setChatUi(false);
      // The server closes the channel when it drops the session without our noticing.
      if (wantJoined && gen === joinGen) connectionLost('room events channel closed');
    };
    dc.onmessage = (m) => { if (tessera.dc === dc) onEventText(m.data); };
    pc.ontrack = (ev) => {
      if (tessera.pc !== pc) return;
      const v = $('composite');
      const stream = ev.streams[0] || (v.srcObject instanceof MediaStream ? v.srcObject : new MediaStream());
      if (!ev.streams[0]) stream.addTrack(ev.track);
      if (v.srcObject !== stream) v.srcObject = stream;
      playComposite();
    };
    pc.onconnectionstatechange = () => { if (tessera.pc === pc && gen === joinGen) onConnectionState(pc); };

    const { location: partUrl, answer } = await negotiate(pc, roomPath(room) + '/participants?name=' + encodeURIComponent(name));
    if (gen !== joinGen) { // left (or gave up) while waiting: drop the just-created participant
      if (partUrl) api(partUrl, { method: 'DELETE' }).catch(() => {});
      return;
    }
    tessera.location = partUrl;
    tessera.me = partUrl ? partUrl.split('/').pop() : null;
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    $('micBtn').disabled = !micTrack; $('camBtn').disabled = !camTrack;
    $('shareBtn').disabled = !(navigator.mediaDevices && navigator.mediaDevices.getDisplayMedia);
    if (tessera.muted.audio || tessera.muted.video) sendOwnMute();
    statsTimer = setInterval(updateStats, 1000);
  } catch (e) {
    console.error(e);
    if (gen !== joinGen) return; // left / superseded meanwhile
    const msg = e && e.message ? e.message : String(e);
    if (e && FATAL_STATUS.has(e.status)) { await stop(true); setStatus('error', msg); return; }
    connectionLost(msg);
  }
}

function onConnectionState(pc) {
  const s = pc.connectionState;
  clearTimeout(discTimer); discTimer = null;
  if (s === 'connected') {
    const r = tessera.reconnect;
    if (r.attempt) r.rejoins++;
    r.reason = null;
    setStatus('connected');
    clearTimeout(stableTimer);
    stableTimer = setTimeout(() => { tessera.reconnect.attempt = 0; }, STABLE_MS);
  } else if (s === 'failed' || s === 'closed') {
    connectionLost('connection ' + s);
  } else if (s === 'disconnected') {
    setStatus(tessera.state, 'connection interrupted');
    discTimer = setTimeout(() => { if (tessera.pc === pc) connectionLost('connection lost'); }, DISCONNECTED_MS);
  }
}

// The session is gone (failed or closed connection, a refused or unanswered POST, the server
// dropping us): release it, DELETE its participant resource if it may still exist, and try
// again after the backoff. Leave cancels the wait.
function connectionLost(reason) {
  if (!wantJoined) return;
  const loc = tessera.location;
  endSession();
  if (loc) api(loc, { method: 'DELETE' }).catch(() => {}); // 404 when the server noticed first
  const r = tessera.reconnect;
  r.attempt++;
  r.reason = reason;
  r.delayMs = BACKOFF_MS(r.attempt);
  const at = Date.now() + r.delayMs;
  const show = () => setStatus('reconnecting', reason + '; retrying in ' + Math.max(0, Math.ceil((at - Date.now()) / 1000)) + ' s');
  show();
  countdownTimer = setInterval(show, 1000);
  reconnectTimer = setTimeout(() => {
    clearInterval(countdownTimer); countdownTimer = reconnectTimer = null;
    r.delayMs = 0;
    if (wantJoined) connect();
  }, r.delayMs);
}
// Back online: retry now rather than at the end of the backoff.
window.addEventListener('online', () => {
  if (!reconnectTimer) return;
  clearTimeout(reconnectTimer); clearInterval(countdownTimer); reconnectTimer = countdownTimer = null;
  tessera.reconnect.delayMs = 0;
  connect();
});

function playComposite() {
  const v = $('composite');
  v.muted = false;
  const p = v.play();
  if (p && p.catch) p.catch(() => { // Autoplay with sound blocked: play muted, offer a button.
    v.muted = true; v.play().catch(() => {});
    $('unmute').hidden = false;
  });
}
$('unmute').onclick = () => { const v = $('composite'); v.muted = false; v.play().catch(() => {}); $('unmute').hidden = true; };

// Ends the current session (peer connection, data channel, screen share) but not the local
// media or the wish to be joined.
function endSession() {
  joinGen++;
  clearInterval(statsTimer); clearTimeout(reconnectTimer); clearInterval(countdownTimer);
  clearTimeout(stableTimer); clearTimeout(discTimer);
  statsTimer = reconnectTimer = countdownTimer = stableTimer = discTimer = null;
  tessera.location = null;
  stopShare();
  if (tessera.dc) { const dc = tessera.dc; tessera.dc = null; try { dc.close(); } catch (_) {} }
  if (tessera.pc) { const pc = tessera.pc; tessera.pc = null; pc.close(); }
  $('composite').srcObject = null; $('unmute').hidden = true;
  Object.assign(tessera.stats, { framesDecoded: 0, frameWidth: 0, frameHeight: 0, fps: 0, audioPackets: 0 });
  lastFrames = null;
  tessera.me = null; tessera.speaker = null; tessera.participants.length = 0; muteSeq = {};
  $('stats').textContent = '—';
  $('output').textContent = '';
  setChatUi(false);
  renderParticipants();
}

function stopLocal() {
  if (localStream) { localStream.getTracks().forEach((t) => t.stop()); localStream = null; }
  $('self').srcObject = null; $('self').hidden = true;
}

// Leaves for good: sendDelete=true also removes the participant server-side.
async function stop(sendDelete) {
  wantJoined = false;
  const loc = tessera.location;
  endSession(); // also stops (and DELETEs) a screen share
  stopLocal();
  tessera.reconnect.delayMs = 0;
  if (sendDelete && loc) { try { await api(loc, { method: 'DELETE' }); } catch (_) {} }
  setUi(false);
}

async function leave() { await stop(true); setStatus('left'); }

function setUi(joined) {
  $('join').disabled = joined; $('leave').disabled = !joined;
  for (const id of ['room', 'name', 'sendVideo', 'sendAudio']) $(id).disabled = joined;
  if (!joined) for (const id of ['micBtn', 'camBtn', 'shareBtn']) $(id).disabled = true;
  showMuted();
}
function setChatUi(open) { $('chatText').disabled = !open; $('chatSend').disabled = !open; }

// --- room events ---------------------------------------------------------------------------
const noMute = () => ({ audio: false, video: false });

function onEventText(text) {
  let ev;
  try { ev = JSON.parse(text); } catch (_) { return; }
  tessera.events.push(ev);
  if (tessera.events.length > 200) tessera.events.splice(0, tessera.events.length - 200);
  const ps = tessera.participants;
  const who = ev.participant;
  switch (ev.type) {
    case 'welcome': {
      // Everyone present, in join order; the room JSON fills in what the event lacks.
      tessera.me = ev.you.id;
      tessera.layout = ev.layout; tessera.speaker = ev.speaker ? ev.speaker.id : null;
      muteSeq = {};
      ps.splice(0, ps.length, ...ev.participants.map((p) => ({
        id: p.id, name: p.name, source: p.source || 'camera', kind: p.kind || null, muted: p.muted || noMute(),
      })));
      if (ev.participants.some((p) => !p.muted)) fetchRoomOnce();
      if (tessera.admin) fetchOutputsOnce();
      break;
    }
    case 'joined':
      if (!ps.some((x) => x.id === who.id)) ps.push({ id: who.id, name: who.name, source: ev.source || 'camera', kind: who.kind || null, muted: noMute() });
      break;
    case 'left':
      if (who.id === tessera.me && wantJoined) {
        // Dropped because our connection ended: rejoin. Kicked, room ended, left elsewhere: stay out.
        if (ev.reason === 'disconnected') { connectionLost('removed by the server (disconnected)'); return; }
        stop(false).then(() => setStatus('left', ev.reason));
        return;
      }
      if (tessera.screen && who.id === tessera.screen.id) stopShare(false);
      ps.splice(0, ps.length, ...ps.filter((x) => x.id !== who.id));
      break;
    case 'active_speaker':
      tessera.speaker = who ? who.id : null;
      break;
    case 'layout_changed':
      tessera.layout = ev.layout;
      break;
    case 'mute_changed': {
      muteSeq[who.id] = (muteSeq[who.id] || 0) + 1;
      const p = ps.find((x) => x.id === who.id);
      if (p) p.muted = { audio: ev.audio, video: ev.video };
      if (who.id === tessera.me) applyOwnMute(ev.audio, ev.video);
      break;
    }
    case 'recording_state':
      tessera.outputs[ev.id] = ev.state;
      renderOutputs();
      return;
    case 'chat':
      tessera.chat.push(ev);
      addChatLine(ev);
      return;
    case 'error':
      addChatLine(ev);
      return;
    default:
      return;
  }
  renderParticipants();
}

// Once per session: the room JSON, for what `welcome` does not carry (mute states, kinds, the
// output format). Never polled: the events keep the list current from here on.
async function fetchRoomOnce() {
  const gen = joinGen;
  tessera.roomFetches++;
  const seq = Object.assign({}, muteSeq);
  try {
    const r = await api(roomPath());
    if (!r.ok || gen !== joinGen) return;
    const j = await r.json();
    if (gen !== joinGen) return;
    for (const q of j.participants || []) {
      const p = tessera.participants.find((x) => x.id === q.id);
      if (!p) continue;
      p.kind = q.kind || p.kind; p.source = q.source || p.source;
      if ((muteSeq[q.id] || 0) === (seq[q.id] || 0) && q.muted) p.muted = q.muted; // no newer event
    }
    $('output').textContent = j.output ? 'output: ' + j.output.width + 'x' + j.output.height + ' @ ' + j.output.fps + ' fps, ' + j.output.kbps + ' kbit/s' : '';
    renderParticipants();
  } catch (_) { /* the events still keep the list */ }
}

// Admins: the recordings and egresses already running when we join (then recording_state).
async function fetchOutputsOnce() {
  const gen = joinGen;
  for (const [path, key] of [['/recordings', 'recordings'], ['/egress', 'egress']]) {
    try {
      const r = await api(roomPath() + path);
      if (!r.ok || gen !== joinGen) continue;
      const j = await r.json();
      for (const o of j[key] || []) if (!(o.id in tessera.outputs)) tessera.outputs[o.id] = o.state;
    } catch (_) {}
  }
  renderOutputs();
}

function addChatLine(ev) {
  const log = $('chatlog');
  const li = document.createElement('li');
  const time = document.createElement('span');
  time.className = 'meta';
  time.textContent = new Date(ev.ts || Date.now()).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  if (ev.type === 'error') {
    li.className = 'error';
    li.append(time, document.createTextNode('error: ' + (ev.reason || 'unknown')));
  } else {
    const from = document.createElement('span');
    from.className = 'from';
    from.textContent = (ev.from && ev.from.name) || '?';
    if (ev.from && ev.from.id === tessera.me) from.textContent += ' (you)';
    li.append(time, from, document.createTextNode(ev.text));
  }
  const atEnd = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  log.appendChild(li);
  while (log.children.length > 300) log.firstChild.remove();
  if (atEnd) log.scrollTop = log.scrollHeight;
}

// Sends a chat message on the data channel; true if it was sent.
function sendChat(text) {
  const dc = tessera.dc;
  text = String(text == null ? '' : text).trim();
  if (!text || !dc || dc.readyState !== 'open') return false;
  dc.send(JSON.stringify({ type: 'chat', text }));
  return true;
}
$('chatform').addEventListener('submit', (e) => {
  e.preventDefault();
  if (sendChat($('chatText').value)) $('chatText').value = '';
});

// --- participants --------------------------------------------------------------------------
function showSpeaker() {
  const el = $('speaker');
  const p = tessera.participants.find((x) => x.id === tessera.speaker);
  el.textContent = 'Active speaker: ';
  const b = document.createElement('b');
  b.textContent = p ? p.name : '—';
  el.appendChild(b);
}

function renderParticipants() {
  showSpeaker();
  const ul = $('participants');
  ul.textContent = '';
  if (!tessera.pc) {
    ul.innerHTML = '<li><span></span></li>';
    ul.firstChild.firstChild.textContent = wantJoined ? 'connecting…' : 'not joined';
    return;
  }
  const admin = tessera.admin;
  for (const p of tessera.participants) {
    const li = document.createElement('li');
    li.dataset.id = p.id;
    const label = p.name || p.id;
    const nm = document.createElement('span');
    nm.className = 'who';
    nm.title = p.id;
    nm.textContent = label + (p.source === 'screen' ? ' (screen)' : '') + (p.id === tessera.me ? ' (you)' : '');
    const tags = document.createElement('span');
    tags.className = 'tags';
    const tag = (text, cls, aria) => {
      const s = document.createElement('span');
      s.textContent = text; s.className = cls || ''; s.title = aria; s.setAttribute('aria-label', aria);
      tags.append(s, ' ');
    };
    const m = p.muted || noMute();
    if (p.id === tessera.speaker) tag('● speaking', 'talk', 'speaking');
    if (m.audio) tag('mic off', 'off', 'microphone muted');
    if (m.video) tag('cam off', 'off', 'camera muted');
    if (p.kind === 'whep') tag('viewer', '', 'viewer');
    if (p.kind === 'whip') tag('WHIP', '', 'WHIP publisher');
    li.append(nm, tags);
    if (admin) {
      const btn = (text, cls, aria, onclick) => {
        const b = document.createElement('button');
        b.type = 'button'; b.className = 'small ' + cls; b.textContent = text;
        b.setAttribute('aria-label', aria); b.onclick = onclick;
        li.append(b);
      };
      btn('pin', 'pin', 'Pin ' + label + ' large', () => setLayout({ layout: 'pinned', participant: p.id }));
      btn(m.audio ? 'unmute' : 'mute', 'mute', (m.audio ? 'Unmute ' : 'Mute ') + label + '’s microphone',
        () => serverMute(p.id, { audio: !m.audio }));
      if (p.id !== tessera.me) btn('kick', 'kick', 'Remove ' + label + ' from the room', () => kick(p.id));
    }
    ul.appendChild(li);
  }
  if (!ul.children.length) ul.innerHTML = '<li><span>empty</span></li>';
  // The pinned-layout target list follows the participants.
  const sel = $('pinWho'), keep = sel.value;
  sel.textContent = '';
  for (const p of tessera.participants) {
    const o = document.createElement('option');
    o.value = p.id; o.textContent = p.name + (p.source === 'screen' ? ' (screen)' : '');
    sel.appendChild(o);
  }
  if (keep) sel.value = keep;
  showLayout();
}

// The picker follows the room's layout, unless the user is busy with it.
function showLayout() {
  const l = tessera.layout, sel = $('layoutSel');
  if (!l || document.activeElement === sel || document.activeElement === $('pinWho')) return;
  if (![...sel.options].some((o) => o.value === l.layout)) return; // custom
  sel.value = l.layout;
  $('pinWho').hidden = !tessera.admin || l.layout !== 'pinned';
  if (l.layout === 'pinned' && l.participant) $('pinWho').value = l.participant;
}

// --- admin controls ------------------------------------------------------------------------
// Shows or hides every `.admin` element (layout picker, outputs, per-participant buttons).
function showAdmin() {
  tessera.admin = computeAdmin();
  for (const el of document.querySelectorAll('.admin')) el.hidden = !tessera.admin;
  $('pinWho').hidden = !tessera.admin || $('layoutSel').value !== 'pinned';
  renderParticipants();
  renderOutputs();
}

// Server mute of participant `id`: what = {audio?, video?}; resolves to the HTTP status.
async function serverMute(id, what) {
  if (typeof what === 'boolean') what = { audio: what };
  try {
    const r = await apiJson('PUT', roomPath() + '/participants/' + encodeURIComponent(id) + '/mute', what);
    notice(r.ok ? '' : 'mute refused: ' + await failText(r));
    return r.status;
  } catch (e) { notice('mute failed: ' + e); return 0; }
}

// Removes participant `id` from the room (admin: its `left` event says `kicked`).
async function kick(id) {
  try {
    const r = await api(roomPath() + '/participants/' + encodeURIComponent(id), { method: 'DELETE' });
    notice(r.ok ? '' : 'kick refused: ' + await failText(r));
    return r.status;
  } catch (e) { notice('kick failed: ' + e); return 0; }
}

// PUT the room's layout; resolves to the HTTP status (0 on a network error).
async function setLayout(obj) {
  try {
    const r = await apiJson('PUT', roomPath() + '/layout', obj);
    notice(r.ok ? '' : 'layout refused: ' + await failText(r));
    return r.status;
  } catch (e) { notice('layout failed: ' + e); return 0; }
}
$('layoutSel').addEventListener('change', () => { $('pinWho').hidden = !tessera.admin || $('layoutSel').value !== 'pinned'; });
$('layoutBtn').addEventListener('click', () => {
  const layout = $('layoutSel').value;
  if (layout === 'pinned' && !$('pinWho').value) { notice('choose a participant to pin'); return; }
  setLayout(layout === 'pinned' ? { layout, participant: $('pinWho').value } : { layout });
});

// Starts / stops an output; the answer's state shows at once, recording_state keeps it current.
async function outputCall(method, path, body, what) {
  try {
    const r = body ? await apiJson(method, roomPath() + path, body) : await api(roomPath() + path, { method });
    if (!r.ok) { notice(what + ' refused: ' + await failText(r)); return r.status; }
    const j = await r.json().catch(() => null);
    if (j && j.id) tessera.outputs[j.id] = j.state || 'stopped';
    notice('');
    renderOutputs();
    return r.status;
  } catch (e) { notice(what + ' failed: ' + e); return 0; }
}
function startRecording(format) { return outputCall('POST', '/recordings', { format: format || 'webm' }, 'recording'); }
function stopRecording(id) { return outputCall('DELETE', '/recordings/' + encodeURIComponent(id), null, 'stop recording'); }
function startEgress(url) {
  url = String(url || '').trim();
  return outputCall('POST', '/egress', /^[a-z]+:\/\//i.test(url) ? { url } : { hls: url }, 'egress');
}
function stopEgress(id) { return outputCall('DELETE', '/egress/' + encodeURIComponent(id), null, 'stop egress'); }
$('recBtn').addEventListener('click', () => startRecording($('recFormat').value));
$('egressForm').addEventListener('submit', (e) => {
  e.preventDefault();
  if ($('egressUrl').value.trim()) startEgress($('egressUrl').value);
});

const isLive = (id, state) => (id.startsWith('eg') ? state !== 'stopped' : state === 'recording');
// The REC / LIVE badges (everyone) and, for admins, the running outputs with Stop buttons.
function renderOutputs() {
  const running = Object.entries(tessera.outputs).filter(([id, st]) => isLive(id, st));
  $('recBadge').hidden = !running.some(([id]) => !id.startsWith('eg'));
  $('liveBadge').hidden = !running.some(([id]) => id.startsWith('eg'));
  const ul = $('outputs');
  ul.textContent = '';
  for (const [id, st] of running) {
    const li = document.createElement('li');
    li.append((id.startsWith('eg') ? 'egress ' : 'recording ') + id + ': ' + st + ' ');
    const b = document.createElement('button');
    b.type = 'button'; b.className = 'small'; b.textContent = 'stop';
    b.setAttribute('aria-label', 'Stop ' + id);
    b.onclick = () => (id.startsWith('eg') ? stopEgress(id) : stopRecording(id));
    li.append(b);
    ul.appendChild(li);
  }
}

// --- own mute ------------------------------------------------------------------------------
function showMuted() {
  const m = tessera.muted;
  $('micBtn').textContent = m.audio ? 'Unmute mic' : 'Mute mic';
  $('micBtn').setAttribute('aria-pressed', String(m.audio));
  $('camBtn').textContent = m.video ? 'Start camera' : 'Stop camera';
  $('camBtn').setAttribute('aria-pressed', String(m.video));
  $('self').classList.toggle('off', m.video);
}
// Local tracks follow the mute state (also when the server muted us).
function applyOwnMute(audio, video) {
  Object.assign(tessera.muted, { audio, video });
  if (localStream) {
    localStream.getAudioTracks().forEach((t) => { t.enabled = !audio; });
    localStream.getVideoTracks().forEach((t) => { t.enabled = !video; });
  }
  showMuted();
}
function sendOwnMute() {
  const dc = tessera.dc;
  if (dc && dc.readyState === 'open') dc.send(JSON.stringify({ type: 'mute', audio: tessera.muted.audio, video: tessera.muted.video }));
  else if (dc) dc.addEventListener('open', sendOwnMute, { once: true }); // a rejoin keeps the mute
}
function toggleMute(kind) {
  const m = Object.assign({}, tessera.muted);
  m[kind] = !m[kind];
  applyOwnMute(m.audio, m.video);
  sendOwnMute();
}
$('micBtn').addEventListener('click', () => toggleMute('audio'));
$('camBtn').addEventListener('click', () => toggleMute('video'));

// --- screen share: a second, send-only peer connection ------------------------------------
async function startShare() {
  if (tessera.screen || !tessera.pc) return;
  const btn = $('shareBtn');
  btn.disabled = true;
  let stream = null, pc = null;
  try {
    stream = await navigator.mediaDevices.getDisplayMedia({ video: true });
    const track = stream.getVideoTracks()[0];
    pc = new RTCPeerConnection({ iceServers: iceServers(), bundlePolicy: 'max-bundle' });
    preferCodecs(pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] }));
    const share = tessera.screen = { pc, stream, location: null, id: null };
    track.onended = () => { if (tessera.screen === share) stopShare(); }; // stopped in the browser UI
    const name = $('name').value.trim() || 'guest';
    const { location: loc, answer } = await negotiate(pc, roomPath() + '/participants?name=' + encodeURIComponent(name) + '&source=screen');
    share.location = loc; share.id = loc ? loc.split('/').pop() : null;
    if (tessera.screen !== share) { if (loc) api(loc, { method: 'DELETE' }).catch(() => {}); return; }
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    btn.textContent = 'Stop sharing'; btn.setAttribute('aria-pressed', 'true');
    notice('');
  } catch (e) {
    if (pc) pc.close();
    if (stream) stream.getTracks().forEach((t) => t.stop());
    tessera.screen = null;
    if (!e || e.name !== 'NotAllowedError') notice('screen share failed: ' + (e && e.message ? e.message : e));
  } finally {
    btn.disabled = !tessera.pc;
  }
}
async function stopShare(sendDelete = true) {
  const s = tessera.screen;
  if (!s) return;
  tessera.screen = null;
  s.stream.getTracks().forEach((t) => t.stop());
  s.pc.close();
  $('shareBtn').textContent = 'Share screen'; $('shareBtn').setAttribute('aria-pressed', 'false');
  if (sendDelete && s.location) { try { await api(s.location, { method: 'DELETE' }); } catch (_) {} }
}
$('shareBtn').addEventListener('click', () => (tessera.screen ? stopShare() : startShare()));

// --- stats (and a watchdog for a connection closed under us) -------------------------------
async function updateStats() {
  const pc = tessera.pc;
  if (!pc) return;
  // Closing a peer connection fires no state event: notice it here.
  if (pc.signalingState === 'closed') { connectionLost('connection closed'); return; }
  try {
    const report = await pc.getStats();
    if (tessera.pc !== pc) return;
    const s = tessera.stats;
    report.forEach((r) => {
      if (r.type !== 'inbound-rtp') return;
      const kind = r.kind || r.mediaType;
      if (kind === 'video') {
        s.framesDecoded = r.framesDecoded || 0;
        s.frameWidth = r.frameWidth || 0;
        s.frameHeight = r.frameHeight || 0;
        if (typeof r.framesPerSecond === 'number') s.fps = r.framesPerSecond;
        else if (lastFrames) s.fps = Math.max(0, (s.framesDecoded - lastFrames.n) * 1000 / (r.timestamp - lastFrames.t));
        lastFrames = { n: s.framesDecoded, t: r.timestamp };
      } else if (kind === 'audio') {
        s.audioPackets = r.packetsReceived || 0;
      }
    });
    $('stats').textContent = 'video: ' + s.framesDecoded + ' frames, ' + s.frameWidth + 'x' + s.frameHeight +
      ' @ ' + Math.round(s.fps) + ' fps · audio: ' + s.audioPackets + ' packets';
  } catch (e) { console.warn('getStats failed', e); }
}

$('joinform').addEventListener('submit', (e) => { e.preventDefault(); join(); });
$('leave').addEventListener('click', leave);
// Best-effort removal when the tab goes away.
window.addEventListener('pagehide', () => {
  for (const loc of [tessera.screen && tessera.screen.location, tessera.location]) {
    if (loc) { try { fetch(loc, { method: 'DELETE', keepalive: true, headers: authHeaders() }); } catch (_) {} }
  }
});
showAdmin();
refreshDevices();
const configLoaded = fetchConfig();
if (qs.get('autojoin') === '1') configLoaded.then(join);
