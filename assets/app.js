'use strict';
// Tessera web client: joins a room with one peer connection (camera + microphone up, composite
// + mix-minus down), follows the room events on a data channel, chats, mutes, shares a screen
// over a second peer connection and, for admins, picks the layout and pins / mutes participants.
const $ = (id) => document.getElementById(id);
const qs = new URLSearchParams(location.search);
$('room').value = qs.get('room') || 'demo';
$('name').value = qs.get('name') || 'guest-' + Math.random().toString(36).slice(2, 6).padEnd(4, '0');
const token = qs.get('token') || null;

// Test hook: a single object, mutated in place so references stay valid.
const tessera = window.tessera = {
  pc: null, dc: null, state: 'idle', location: null, room: null, error: null, me: null,
  stats: { framesDecoded: 0, frameWidth: 0, frameHeight: 0, fps: 0, audioPackets: 0 },
  chat: [],        // chat events, as received
  events: [],      // the last 200 room events, as received
  layout: null,    // last layout from events / room JSON
  speaker: null,   // active speaker id
  participants: [], // [{id, name, source, kind, publishes, muted}]
  muted: { audio: false, video: false },
  screen: null,    // {pc, location, stream} while sharing
  auth: false,
  sendChat, setLayout,
};
let localStream = null, statsTimer = null, roomTimer = null, lastFrames = null;
let joinGen = 0; // bumped on teardown so a stale join() can't clobber newer state
let eventSeq = 0; // bumped by layout/speaker events so an older room JSON does not undo them

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
const roomPath = (room) => '/v1/rooms/' + encodeURIComponent(room || tessera.room || $('room').value.trim());

// The token's claims, only to decide what to show (the server checks them).
function tokenClaims() {
  if (!token) return null;
  try {
    const b = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(b + '='.repeat((4 - b.length % 4) % 4)));
  } catch (_) { return null; }
}
const isAdmin = () => !tessera.auth || !!(tokenClaims() || {}).grants?.admin;

function setStatus(state, detail) {
  tessera.state = state;
  tessera.error = state === 'error' ? detail : null;
  const el = $('status');
  el.textContent = state === 'error' ? 'error: ' + detail : detail ? state + ' (' + detail + ')' : state;
  el.className = state === 'error' ? 'err' : state === 'connected' ? 'ok' : '';
}
function notice(msg) { $('notice').textContent = msg || ''; }
async function failText(r) {
  const t = (await r.text().catch(() => '')).trim();
  return 'HTTP ' + r.status + (t ? ': ' + t : '');
}

async function fetchConfig() {
  try {
    const r = await fetch('/v1/config', { cache: 'no-store' });
    if (!r.ok) return [];
    const j = await r.json();
    tessera.auth = !!j.auth;
    return Array.isArray(j.ice_servers) ? j.ice_servers : [];
  } catch (_) { return []; }
}

// Put VP8 first, H264 as fallback, keep retransmission/FEC helpers.
function preferVP8(transceiver) {
  try {
    if (!transceiver.setCodecPreferences || !RTCRtpReceiver.getCapabilities) return;
    const codecs = RTCRtpReceiver.getCapabilities('video').codecs;
    const rank = (c) => {
      const m = c.mimeType.toLowerCase();
      return m === 'video/vp8' ? 0 : m === 'video/h264' ? 1 : /rtx|red|ulpfec/.test(m) ? 2 : 9;
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

// Offer (complete, no trickle), POST it, apply the answer; returns the absolute Location.
async function negotiate(pc, url) {
  await pc.setLocalDescription(await pc.createOffer());
  await waitForIce(pc, 2000);
  const resp = await api(url, { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: pc.localDescription.sdp });
  const body = await resp.text();
  if (!resp.ok) throw new Error('HTTP ' + resp.status + (body ? ': ' + body.trim() : ''));
  const loc = resp.headers.get('Location');
  return { location: loc ? new URL(loc, location.href).href : null, answer: body };
}

// --- joining and leaving -------------------------------------------------------------------
async function join() {
  if (tessera.pc) return;
  const room = $('room').value.trim() || 'demo';
  const name = $('name').value.trim() || 'guest';
  const wantVideo = $('sendVideo').checked, wantAudio = $('sendAudio').checked;
  const gen = ++joinGen;
  setUi(true);
  setStatus('joining');
  notice('');
  tessera.room = room;
  tessera.chat.length = 0; tessera.events.length = 0; $('chatlog').textContent = '';
  Object.assign(tessera.muted, { audio: false, video: false });
  try {
    let note = '';
    if (wantVideo || wantAudio) {
      try {
        localStream = await navigator.mediaDevices.getUserMedia({
          video: wantVideo ? { width: 640, height: 360, frameRate: 30 } : false,
          audio: wantAudio,
        });
      } catch (e) { // No devices / permission denied: fall back to viewer.
        note = 'media unavailable (' + e.name + '), joining as viewer';
        console.warn(note, e);
      }
    }
    const iceServers = await fetchConfig();
    if (gen !== joinGen) { // left during getUserMedia / config fetch
      if (localStream) { localStream.getTracks().forEach((t) => t.stop()); localStream = null; }
      return;
    }
    const camTrack = localStream && localStream.getVideoTracks()[0];
    const micTrack = localStream && localStream.getAudioTracks()[0];
    if (camTrack) { $('self').srcObject = new MediaStream([camTrack]); $('self').hidden = false; }

    const pc = tessera.pc = new RTCPeerConnection({ iceServers });
    const vt = camTrack ? pc.addTransceiver(camTrack, { direction: 'sendrecv' })
                        : pc.addTransceiver('video', { direction: 'recvonly' });
    preferVP8(vt);
    if (micTrack) pc.addTransceiver(micTrack, { direction: 'sendrecv' });
    else pc.addTransceiver('audio', { direction: 'recvonly' });
    // Room events: the channel must exist before the offer so it has an m=application section.
    const dc = tessera.dc = pc.createDataChannel('tessera');
    dc.onopen = () => { if (tessera.dc === dc) setChatUi(true); };
    dc.onclose = () => { if (tessera.dc === dc) setChatUi(false); };
    dc.onmessage = (m) => { if (tessera.dc === dc) onEventText(m.data); };

    pc.ontrack = (ev) => {
      const v = $('composite');
      const stream = ev.streams[0] || (v.srcObject instanceof MediaStream ? v.srcObject : new MediaStream());
      if (!ev.streams[0]) stream.addTrack(ev.track);
      if (v.srcObject !== stream) v.srcObject = stream;
      playComposite();
    };
    pc.onconnectionstatechange = () => {
      if (tessera.pc !== pc) return;
      const s = pc.connectionState;
      if (s === 'connected') { setStatus('connected'); refreshSoon(); }
      else if (s === 'failed') setStatus('error', 'connection failed');
      else if (tessera.state !== 'error') setStatus(tessera.state === 'connected' ? 'connected' : 'joining', s);
    };

    const { location: partUrl, answer } = await negotiate(pc, roomPath(room) + '/participants?name=' + encodeURIComponent(name));
    if (tessera.pc !== pc) { // left while waiting: drop the just-created participant
      if (partUrl) api(partUrl, { method: 'DELETE' }).catch(() => {});
      return;
    }
    tessera.location = partUrl;
    if (partUrl && !tessera.me) tessera.me = partUrl.split('/').pop();
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    if (tessera.state === 'joining') setStatus('joining', note || pc.connectionState);
    $('micBtn').disabled = !micTrack; $('camBtn').disabled = !camTrack;
    $('shareBtn').disabled = !(navigator.mediaDevices && navigator.mediaDevices.getDisplayMedia);
    statsTimer = setInterval(updateStats, 1000);
    roomTimer = setInterval(refreshRoom, 2000);
    refreshRoom();
  } catch (e) {
    console.error(e);
    if (gen !== joinGen) return; // user already left / rejoined
    const msg = e && e.message ? e.message : String(e);
    await teardown(true);
    setStatus('error', msg);
  }
}

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

// Release everything; sendDelete=true also removes the participant server-side.
async function teardown(sendDelete) {
  joinGen++;
  clearInterval(statsTimer); clearInterval(roomTimer); statsTimer = roomTimer = null;
  const loc = tessera.location;
  tessera.location = null;
  await stopShare();
  if (sendDelete && loc) { try { await api(loc, { method: 'DELETE' }); } catch (_) {} }
  if (tessera.dc) { try { tessera.dc.close(); } catch (_) {} tessera.dc = null; }
  if (tessera.pc) { tessera.pc.close(); tessera.pc = null; }
  if (localStream) { localStream.getTracks().forEach((t) => t.stop()); localStream = null; }
  $('composite').srcObject = null; $('self').srcObject = null; $('self').hidden = true; $('unmute').hidden = true;
  Object.assign(tessera.stats, { framesDecoded: 0, frameWidth: 0, frameHeight: 0, fps: 0, audioPackets: 0 });
  lastFrames = null;
  tessera.me = null; tessera.speaker = null; tessera.participants.length = 0;
  $('stats').textContent = '—';
  $('participants').innerHTML = '<li><span>not joined</span></li>';
  $('output').textContent = '';
  showSpeaker();
  setChatUi(false);
  setUi(false);
}

async function leave() { await teardown(true); setStatus('left'); }

function setUi(joined) {
  $('join').disabled = joined; $('leave').disabled = !joined;
  for (const id of ['room', 'name', 'sendVideo', 'sendAudio']) $(id).disabled = joined;
  if (!joined) for (const id of ['micBtn', 'camBtn', 'shareBtn']) $(id).disabled = true;
  showMuted();
}
function setChatUi(open) { $('chatText').disabled = !open; $('chatSend').disabled = !open; }

// --- room events ---------------------------------------------------------------------------
function onEventText(text) {
  let ev;
  try { ev = JSON.parse(text); } catch (_) { return; }
  tessera.events.push(ev);
  if (tessera.events.length > 200) tessera.events.splice(0, tessera.events.length - 200);
  const ps = tessera.participants;
  const who = ev.participant;
  switch (ev.type) {
    case 'welcome':
      tessera.me = ev.you.id;
      eventSeq++;
      tessera.layout = ev.layout; tessera.speaker = ev.speaker ? ev.speaker.id : null;
      for (const p of ev.participants) if (!ps.some((x) => x.id === p.id)) ps.push({ id: p.id, name: p.name });
      break;
    case 'joined':
      if (!ps.some((x) => x.id === who.id)) ps.push({ id: who.id, name: who.name, source: ev.source });
      refreshSoon();
      break;
    case 'left':
      if (who.id === tessera.me && tessera.location) { // kicked, room ended, dropped
        teardown(false).then(() => setStatus('left', ev.reason));
        return;
      }
      if (tessera.screen && who.id === tessera.screen.id) stopShare(false);
      tessera.participants.splice(0, ps.length, ...ps.filter((x) => x.id !== who.id));
      break;
    case 'active_speaker':
      eventSeq++;
      tessera.speaker = who ? who.id : null;
      break;
    case 'layout_changed':
      eventSeq++;
      tessera.layout = ev.layout;
      break;
    case 'mute_changed': {
      const p = ps.find((x) => x.id === who.id);
      if (p) p.muted = { audio: ev.audio, video: ev.video };
      if (who.id === tessera.me) applyOwnMute(ev.audio, ev.video);
      break;
    }
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
  if (!tessera.pc) return;
  ul.textContent = '';
  const admin = isAdmin();
  for (const p of tessera.participants) {
    const li = document.createElement('li');
    const nm = document.createElement('span');
    nm.className = 'who';
    nm.title = p.id;
    nm.textContent = (p.name || p.id) + (p.source === 'screen' ? ' (screen)' : '') + (p.id === tessera.me ? ' (you)' : '');
    const tags = document.createElement('span');
    tags.className = 'tags';
    const tag = (text, cls, label) => {
      const s = document.createElement('span');
      s.textContent = text; s.className = cls || ''; s.title = label; s.setAttribute('aria-label', label);
      tags.append(s, ' ');
    };
    if (p.id === tessera.speaker) tag('● speaking', 'talk', 'speaking');
    const m = p.muted || {}, pub = p.publishes || {};
    if (m.audio) tag('mic off', 'off', 'microphone muted');
    else if (pub.audio) tag('mic', '', 'microphone on');
    if (m.video) tag('cam off', 'off', 'camera muted');
    else if (pub.video) tag(p.source === 'screen' ? 'screen' : 'cam', '', 'video on');
    if (p.kind === 'whep') tag('viewer', '', 'viewer');
    li.append(nm, tags);
    if (admin) {
      const pin = document.createElement('button');
      pin.type = 'button'; pin.className = 'small'; pin.textContent = 'pin';
      pin.setAttribute('aria-label', 'Pin ' + (p.name || p.id) + ' large');
      pin.onclick = () => setLayout({ layout: 'pinned', participant: p.id });
      const mute = document.createElement('button');
      mute.type = 'button'; mute.className = 'small'; mute.textContent = m.audio ? 'unmute' : 'mute';
      mute.setAttribute('aria-label', (m.audio ? 'Unmute ' : 'Mute ') + (p.name || p.id) + '’s microphone');
      mute.onclick = () => serverMute(p.id, !m.audio);
      li.append(pin, mute);
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
  $('pinWho').hidden = l.layout !== 'pinned';
  if (l.layout === 'pinned' && l.participant) $('pinWho').value = l.participant;
}

// Now, and again once the newcomer's tracks have had time to arrive (`publishes`).
function refreshSoon() { refreshRoom(); setTimeout(refreshRoom, 1500); }

async function refreshRoom() {
  if (!tessera.pc || !tessera.room) return;
  const seq = eventSeq;
  try {
    const r = await api(roomPath());
    if (!r.ok || !tessera.pc) return;
    const j = await r.json();
    if (!tessera.pc) return;
    tessera.participants.splice(0, tessera.participants.length, ...(j.participants || []));
    if (seq === eventSeq) { // no newer layout / speaker event arrived meanwhile
      if (j.layout) tessera.layout = j.layout;
      tessera.speaker = j.active_speaker || null;
    }
    renderParticipants();
    $('output').textContent = j.output ? 'output: ' + JSON.stringify(j.output) : '';
  } catch (_) { /* transient; retry next tick */ }
}

async function serverMute(id, audio) {
  try {
    const r = await api(roomPath() + '/participants/' + encodeURIComponent(id) + '/mute', {
      method: 'PUT', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ audio }),
    });
    notice(r.ok ? '' : 'mute refused: ' + await failText(r));
  } catch (e) { notice('mute failed: ' + e); }
}

// PUT the room's layout; resolves to the HTTP status (0 on a network error).
async function setLayout(obj) {
  try {
    const r = await api(roomPath() + '/layout', {
      method: 'PUT', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(obj),
    });
    notice(r.ok ? '' : 'layout refused: ' + await failText(r));
    return r.status;
  } catch (e) { notice('layout failed: ' + e); return 0; }
}
$('layoutSel').addEventListener('change', () => { $('pinWho').hidden = $('layoutSel').value !== 'pinned'; });
$('layoutBtn').addEventListener('click', () => {
  const layout = $('layoutSel').value;
  if (layout === 'pinned' && !$('pinWho').value) { notice('choose a participant to pin'); return; }
  setLayout(layout === 'pinned' ? { layout, participant: $('pinWho').value } : { layout });
});

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
function toggleMute(kind) {
  const m = Object.assign({}, tessera.muted);
  m[kind] = !m[kind];
  applyOwnMute(m.audio, m.video);
  const dc = tessera.dc;
  if (dc && dc.readyState === 'open') dc.send(JSON.stringify({ type: 'mute', [kind]: m[kind] }));
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
    const iceServers = await fetchConfig();
    pc = new RTCPeerConnection({ iceServers });
    preferVP8(pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] }));
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
  if (sendDelete && s.location) { try { await api(s.location, { method: 'DELETE' }); } catch (_) {} }
  $('shareBtn').textContent = 'Share screen'; $('shareBtn').setAttribute('aria-pressed', 'false');
}
$('shareBtn').addEventListener('click', () => (tessera.screen ? stopShare() : startShare()));

// --- stats ---------------------------------------------------------------------------------
async function updateStats() {
  const pc = tessera.pc;
  if (!pc) return;
  try {
    const report = await pc.getStats();
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
fetchConfig();
if (qs.get('autojoin') === '1') join();
