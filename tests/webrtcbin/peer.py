#!/usr/bin/python3
"""A GStreamer `webrtcbin` client of Tessera: a WHIP publisher, a WHEP viewer or a participant.

Driven from Python GI (Debian bookworm's `simple-whip-client` aborts at start). Signaling is
non-trickle, as Tessera wants it: the offer is POSTed once ICE gathering has completed, with every
candidate in it, and the answer (which carries all of the server's candidates) is applied whole.

Prints one JSON object per line on stdout, e.g.

    {"event": "offer", "sections": [{"kind": "video", "mid": "video0", "port": 9, "bundle_only": false, ...}]}
    {"event": "answer", "status": 201, "location": "http://…/v1/rooms/r/participants/p1-…"}
    {"event": "connected"}
    {"event": "rtp_ssrc", "kind": "audio", "ssrc": 1234}
    {"event": "stats", "frames": 31, "size": [1280, 720], "audio_rms": -14.2, "tones": {"500": -12.1}, ...}
    {"event": "deleted", "status": 204}

and exits 0 after `--duration` seconds (having DELETEd its Location), or non-zero after an
`{"event": "error", ...}` line. Needs python3-gi, gir1.2-gst-plugins-bad-1.0 and gstreamer1.0-nice.

    peer.py --url http://127.0.0.1:8080 --room demo --role publisher --colour 200,40,40 --tone 660
    peer.py --url http://127.0.0.1:8080 --room demo --role viewer --tones 500,900 --points 320,360
"""

import argparse
import array
import json
import math
import random
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

RATE = 48000
VP8_PT, H264_PT, OPUS_PT = 96, 102, 111
OUT_LOCK = threading.Lock()


def emit(event, **fields):
    """One JSON line on stdout."""
    with OUT_LOCK:
        sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
        sys.stdout.flush()


def log(msg):
    with OUT_LOCK:
        sys.stderr.write(f"[peer.py {time.monotonic():.3f}] {msg}\n")
        sys.stderr.flush()


# ---------------------------------------------------------------------------------------------
# SDP helpers (text level: what a server sees)


def sections(sdp):
    """Splits SDP text into (session lines, [media section lines])."""
    lines = [line for line in sdp.replace("\r\n", "\n").split("\n") if line]
    session, media = [], []
    for line in lines:
        if line.startswith("m="):
            media.append([line])
        elif media:
            media[-1].append(line)
        else:
            session.append(line)
    return session, media


def join_sdp(session, media):
    return "\r\n".join(session + [line for m in media for line in m]) + "\r\n"


def describe(sdp):
    """What each m-section says: kind, port, mid, direction, bundle-only, SSRCs, candidates."""
    out = []
    for m in sections(sdp)[1]:
        head = m[0][2:].split()
        attrs = m[1:]
        mid = next((a[6:] for a in attrs if a.startswith("a=mid:")), None)
        direction = next(
            (a[2:] for a in attrs if a[2:] in ("sendrecv", "sendonly", "recvonly", "inactive")), None
        )
        ssrcs = sorted({int(a[7:].split()[0]) for a in attrs if a.startswith("a=ssrc:")})
        out.append(
            {
                "kind": head[0],
                "port": int(head[1]),
                "mid": mid,
                "direction": direction,
                "bundle_only": "a=bundle-only" in attrs,
                "ssrcs": ssrcs,
                "candidates": sum(1 for a in attrs if a.startswith("a=candidate:")),
                "extmaps": [a.split(None, 1)[1] for a in attrs if a.startswith("a=extmap:")],
                "rtpmaps": [a[9:] for a in attrs if a.startswith("a=rtpmap:")],
            }
        )
    return out


def munge_ssrc(sdp, mode):
    """`wrong`: every section's a=ssrc values replaced by other numbers (one inserted where a
    sending section has none); `none`: a=ssrc and a=ssrc-group lines removed."""
    if mode == "keep":
        return sdp
    session, media = sections(sdp)
    taken = {int(x) for x in re.findall(r"a=ssrc:(\d+)", sdp)}
    for m in media:
        if mode == "none":
            m[:] = [a for a in m if not a.startswith("a=ssrc:") and not a.startswith("a=ssrc-group:")]
            continue
        old = []
        for a in m:
            if a.startswith("a=ssrc:"):
                s = int(a[7:].split()[0])
                if s not in old:
                    old.append(s)
        mapping = {}
        for s in old:
            n = random.randint(1, 0xFFFFFFFF)
            while n in taken:
                n = random.randint(1, 0xFFFFFFFF)
            taken.add(n)
            mapping[s] = n
        sending = any(a in ("a=sendrecv", "a=sendonly") for a in m)
        if not old and sending:
            n = random.randint(1, 0xFFFFFFFF)
            m.append(f"a=ssrc:{n} cname:webrtcbin-wrong-ssrc")
            continue

        def repl(match):
            return str(mapping.get(int(match.group(0)), int(match.group(0))))

        for i, a in enumerate(m):
            if a.startswith("a=ssrc:"):
                m[i] = "a=ssrc:" + re.sub(r"^\d+", repl, a[7:])
            elif a.startswith("a=ssrc-group:"):
                sem, *ids = a[13:].split()
                m[i] = "a=ssrc-group:" + " ".join([sem] + [str(mapping.get(int(x), int(x))) for x in ids])
    return join_sdp(session, media)


def add_candidates(sdp, candidates):
    """Puts gathered candidates into their sections when webrtcbin's local description lacks them."""
    session, media = sections(sdp)
    for idx, cand in candidates:
        if idx < len(media):
            line = cand if cand.startswith("a=") else "a=" + cand
            if line not in media[idx]:
                media[idx].append(line)
    for idx in {i for i, _ in candidates}:
        if idx < len(media) and "a=end-of-candidates" not in media[idx]:
            media[idx].append("a=end-of-candidates")
    return join_sdp(session, media)


# ---------------------------------------------------------------------------------------------
# HTTP


def http(method, url, body=None, content_type=None):
    req = urllib.request.Request(url, data=body, method=method)
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode("utf-8", "replace")


# ---------------------------------------------------------------------------------------------
# Audio analysis: the same measure as the Rust tests' `tone_db` (Hann-windowed Goertzel, dB
# relative to a full-scale sine).


class Hann:
    def __init__(self):
        self.n = 0
        self.w = []

    def get(self, n):
        if n != self.n:
            self.n = n
            self.w = [0.5 - 0.5 * math.cos(2.0 * math.pi * i / (n - 1)) for i in range(n)]
        return self.w


HANN = Hann()


def tone_db(samples, freq):
    n = len(samples)
    if n < 2:
        return -180.0
    win = HANN.get(n)
    coeff = 2.0 * math.cos(2.0 * math.pi * freq / RATE)
    s1 = s2 = 0.0
    scale = 1.0 / 32768.0
    for x, w in zip(samples, win):
        s0 = x * scale * w + coeff * s1 - s2
        s2 = s1
        s1 = s0
    power = max(s1 * s1 + s2 * s2 - coeff * s1 * s2, 0.0)
    amp = 2.0 * math.sqrt(power) / (n * 0.5)
    return 20.0 * math.log10(max(amp, 1e-9))


def rms_db(samples):
    if not samples:
        return -180.0
    acc = sum(x * x for x in samples) / len(samples)
    return 20.0 * math.log10(max(math.sqrt(acc) / 32768.0, 1e-9))


def yuv_to_rgb(y, u, v):
    """BT.601 limited range, as videoconvert does for I420 → RGB."""
    c, d, e = y - 16, u - 128, v - 128
    r = 1.164 * c + 1.596 * e
    g = 1.164 * c - 0.392 * d - 0.813 * e
    b = 1.164 * c + 2.017 * d
    return [max(0, min(255, round(x))) for x in (r, g, b)]


# ---------------------------------------------------------------------------------------------


class Peer:
    def __init__(self, args):
        self.args = args
        self.loop = GLib.MainLoop()
        self.pipe = Gst.Pipeline.new("peer")
        self.wb = Gst.ElementFactory.make("webrtcbin", "wb")
        if self.wb is None:
            raise SystemExit("no webrtcbin element: install gstreamer1.0-plugins-bad and gstreamer1.0-nice")
        self.wb.set_property("bundle-policy", getattr(GstWebRTC.WebRTCBundlePolicy, args.bundle_policy.upper().replace("-", "_")))
        self.pipe.add(self.wb)
        self.location = None
        self.offered = False
        self.posted = False
        self.finishing = False
        self.exit_code = 0
        self.candidates = []
        self.lock = threading.Lock()
        # Receive side.
        self.frames = 0
        self.size = None
        self.colours = {}
        self.audio = array.array("h")
        self.audio_total = 0
        self.wav = array.array("h") if args.wav else None
        self.start = time.monotonic()
        self.connected_at = None

        self.wb.connect("on-negotiation-needed", self.on_negotiation_needed)
        self.wb.connect("on-ice-candidate", self.on_ice_candidate)
        self.wb.connect("notify::ice-gathering-state", self.on_gathering_state)
        self.wb.connect("notify::connection-state", self.on_connection_state)
        self.wb.connect("notify::ice-connection-state", self.on_ice_connection_state)
        self.wb.connect("pad-added", self.on_pad_added)
        bus = self.pipe.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self.on_bus_error)

        sending = args.role in ("publisher", "participant")
        direction = (
            GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY
            if args.role == "publisher"
            else GstWebRTC.WebRTCRTPTransceiverDirection.SENDRECV
        )
        if sending:
            if not args.audio_only:
                self.add_sender("video", self.video_source_desc(), direction)
            if not args.video_only:
                self.add_sender("audio", self.audio_source_desc(), direction)
        else:
            recv = GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY
            if not args.audio_only:
                self.wb.emit("add-transceiver", recv, Gst.Caps.from_string(self.video_caps()))
            if not args.video_only:
                self.wb.emit("add-transceiver", recv, Gst.Caps.from_string(self.audio_caps()))

    # --- sources ---------------------------------------------------------------------------

    def video_caps(self, sending=False):
        fb = "rtcp-fb-nack=(boolean)true,rtcp-fb-nack-pli=(boolean)true,rtcp-fb-ccm-fir=(boolean)true"
        if self.args.codec == "h264":
            # A sender offers the profile its encoder makes (rtph264pay puts it in its caps).
            profile = "" if sending else "profile-level-id=(string)42e01f,level-asymmetry-allowed=(string)1,"
            return (
                f"application/x-rtp,media=video,encoding-name=H264,payload={H264_PT},clock-rate=90000,"
                f"packetization-mode=(string)1,{profile}{fb}"
            )
        return f"application/x-rtp,media=video,encoding-name=VP8,payload={VP8_PT},clock-rate=90000,{fb}"

    def audio_caps(self):
        return (
            f"application/x-rtp,media=audio,encoding-name=OPUS,payload={OPUS_PT},clock-rate=48000,"
            "encoding-params=(string)2"
        )

    def video_source_desc(self):
        a = self.args
        r, g, b = a.colour
        argb = 0xFF000000 | (r << 16) | (g << 8) | b
        src = f"videotestsrc is-live=true pattern={a.pattern}"
        if a.pattern == "solid-color":
            src += f" foreground-color={argb}"
        if a.codec == "h264":
            enc = (
                "x264enc tune=zerolatency speed-preset=ultrafast bitrate=600 key-int-max=60 ! "
                "video/x-h264,profile=constrained-baseline ! h264parse ! "
                f"rtph264pay pt={H264_PT} config-interval=-1 aggregate-mode=zero-latency"
            )
        else:
            enc = (
                "vp8enc deadline=1 cpu-used=-6 end-usage=cbr target-bitrate=600000 threads=1 "
                f"error-resilient=1 lag-in-frames=0 keyframe-max-dist={a.keyframe_interval} ! "
                f"rtpvp8pay pt={VP8_PT} picture-id-mode=15-bit"
            )
        return (
            f"{src} ! video/x-raw,width=640,height=360,framerate=30/1 ! videoconvert ! queue ! "
            f"{enc} ! capsfilter name=rtpcaps"
        )

    def audio_source_desc(self):
        a = self.args
        return (
            f"audiotestsrc is-live=true wave=sine freq={a.tone} volume={a.volume} samplesperbuffer=960 ! "
            f"audio/x-raw,rate={RATE},channels=1 ! audioconvert ! queue ! "
            f"opusenc bitrate=32000 frame-size=20 ! rtpopuspay pt={OPUS_PT} ! capsfilter name=rtpcaps"
        )

    def add_sender(self, kind, desc, direction):
        branch = Gst.parse_bin_from_description(desc, True)
        caps = self.video_caps(sending=True) if kind == "video" else self.audio_caps()
        branch.get_by_name("rtpcaps").set_property("caps", Gst.Caps.from_string(caps))
        branch.set_name(f"{kind}-src")
        self.pipe.add(branch)
        pad = self.wb.request_pad_simple("sink_%u")
        if branch.get_static_pad("src").link(pad) != Gst.PadLinkReturn.OK:
            raise SystemExit(f"cannot link the {kind} source to webrtcbin")
        pad.get_property("transceiver").set_property("direction", direction)
        # Which SSRC the payloader really sends (webrtcbin 1.22's a=ssrc is not always it).
        pad.add_probe(Gst.PadProbeType.BUFFER, self.on_first_rtp, kind)

    def on_first_rtp(self, pad, info, kind):
        buf = info.get_buffer()
        ok, m = buf.map(Gst.MapFlags.READ)
        if ok:
            data = bytes(m.data[:12])
            buf.unmap(m)
            if len(data) >= 12:
                emit("rtp_ssrc", kind=kind, ssrc=int.from_bytes(data[8:12], "big"), pt=data[1] & 0x7F)
        return Gst.PadProbeReturn.REMOVE

    # --- signaling -------------------------------------------------------------------------

    def on_negotiation_needed(self, _wb):
        with self.lock:
            if self.offered:
                return
            self.offered = True
        promise = Gst.Promise.new_with_change_func(self.on_offer_created, None)
        self.wb.emit("create-offer", None, promise)

    def on_offer_created(self, promise, _data):
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply else None
        if offer is None:
            self.fail("create-offer failed", reply=reply.to_string() if reply else None)
            return
        self.wb.emit("set-local-description", offer, Gst.Promise.new())
        # Gathering may already be over by now; give it a deadline either way.
        GLib.idle_add(self.check_gathered)
        GLib.timeout_add(self.args.gather_timeout * 1000, self.gather_deadline)

    def on_ice_candidate(self, _wb, mline, cand):
        with self.lock:
            self.candidates.append((mline, cand))

    def on_gathering_state(self, *_):
        GLib.idle_add(self.check_gathered)

    def check_gathered(self):
        state = self.wb.get_property("ice-gathering-state")
        if state == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            self.post_offer(timed_out=False)
        return False

    def gather_deadline(self):
        if not self.posted:
            log("ICE gathering did not complete in time; posting the candidates gathered so far")
            self.post_offer(timed_out=True)
        return False

    def post_offer(self, timed_out):
        with self.lock:
            if self.posted:
                return
            self.posted = True
            candidates = list(self.candidates)
        desc = self.wb.get_property("local-description")
        if desc is None:
            self.fail("no local description after gathering")
            return
        local = desc.sdp.as_text()
        if "a=candidate:" not in local:
            local = add_candidates(local, candidates)
        sdp = munge_ssrc(local, self.args.ssrc_mode)
        emit(
            "offer",
            sections=describe(sdp),
            local_sections=describe(local),
            gather_timed_out=timed_out,
            candidates=len(candidates),
        )
        if self.args.print_sdp:
            log("offer as posted:\n" + sdp)
        threading.Thread(target=self.signal, args=(sdp,), daemon=True).start()

    def endpoint(self):
        a = self.args
        room = urllib.parse.quote(a.room, safe="")
        path = {"publisher": f"/whip/{room}", "viewer": f"/whep/{room}", "participant": f"/v1/rooms/{room}/participants"}
        url = a.url.rstrip("/") + (a.path or path[a.role])
        if a.name:
            url += "?name=" + urllib.parse.quote(a.name)
        return url

    def signal(self, sdp):
        url = self.endpoint()
        status, headers, body = http("POST", url, sdp.encode(), "application/sdp")
        if status != 201:
            self.fail("offer refused", status=status, body=body.strip())
            return
        loc = headers.get("Location") or headers.get("location")
        self.location = urllib.parse.urljoin(url, loc) if loc else None
        if self.args.print_sdp:
            log("answer:\n" + body)
        emit("answer", status=status, location=self.location, sections=describe(body))
        ok, msg = GstSdp.SDPMessage.new_from_text(body)
        if ok != GstSdp.SDPResult.OK:
            self.fail("unparsable answer", body=body)
            return
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, msg)
        promise = Gst.Promise.new_with_change_func(self.on_answer_set, None)
        self.wb.emit("set-remote-description", answer, promise)

    def on_answer_set(self, promise, _data):
        reply = promise.get_reply()
        if reply is not None and reply.has_field("error"):
            self.fail("set-remote-description failed", reply=reply.to_string())
            return
        emit("answer_applied")

    def on_connection_state(self, *_):
        state = self.wb.get_property("connection-state")
        name = state.value_nick
        emit("connection_state", state=name)
        if state == GstWebRTC.WebRTCPeerConnectionState.CONNECTED and self.connected_at is None:
            self.connected_at = time.monotonic()
            emit("connected", after_s=round(self.connected_at - self.start, 3))
        elif state == GstWebRTC.WebRTCPeerConnectionState.FAILED:
            GLib.idle_add(lambda: self.fail("connection failed") and False)

    def on_ice_connection_state(self, *_):
        emit("ice_connection_state", state=self.wb.get_property("ice-connection-state").value_nick)

    # --- receive side ----------------------------------------------------------------------

    def on_pad_added(self, _wb, pad):
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        caps = pad.get_current_caps() or pad.query_caps(None)
        s = caps.get_structure(0)
        media = s.get_string("media")
        enc = (s.get_string("encoding-name") or "").upper()
        emit("track", media=media, encoding=enc)
        if media == "video":
            depay = "rtph264depay ! avdec_h264" if enc == "H264" else "rtpvp8depay ! vp8dec"
            desc = f"queue ! {depay} ! videoconvert ! video/x-raw,format=I420 ! appsink name=sink sync=false emit-signals=true max-buffers=2 drop=true"
            cb = self.on_video_sample
        elif media == "audio":
            desc = (
                "queue ! rtpopusdepay ! opusdec ! audioconvert ! audioresample ! "
                f"audio/x-raw,format=S16LE,rate={RATE},channels=1 ! appsink name=sink sync=false emit-signals=true"
            )
            cb = self.on_audio_sample
        else:
            desc, cb = "fakesink", None
        branch = Gst.parse_bin_from_description(desc, True)
        self.pipe.add(branch)
        if cb is not None:
            branch.get_by_name("sink").connect("new-sample", cb)
        branch.sync_state_with_parent()
        if pad.link(branch.get_static_pad("sink")) != Gst.PadLinkReturn.OK:
            self.fail(f"cannot link the received {media} pad")

    def on_video_sample(self, sink):
        sample = sink.emit("pull-sample")
        if sample is None:
            return Gst.FlowReturn.OK
        s = sample.get_caps().get_structure(0)
        w, h = s.get_value("width"), s.get_value("height")
        with self.lock:
            self.frames += 1
            self.size = [w, h]
            sample_points = self.frames % 15 == 1
        if sample_points and self.args.points:
            buf = sample.get_buffer()
            ok, m = buf.map(Gst.MapFlags.READ)
            if ok:
                try:
                    colours = self.read_points(m.data, w, h)
                finally:
                    buf.unmap(m)
                with self.lock:
                    self.colours = colours
        return Gst.FlowReturn.OK

    def read_points(self, data, w, h):
        """Mean colour of a 9x9 block at each point of a default-layout I420 picture."""
        ys = (w + 3) // 4 * 4
        cw = (w + 1) // 2
        cs = (cw + 3) // 4 * 4
        uo = ys * ((h + 1) // 2 * 2)
        vo = uo + cs * ((h + 1) // 2)
        out = {}
        for x, y in self.args.points:
            if not (0 <= x < w and 0 <= y < h):
                continue
            acc = [0, 0, 0]
            n = 0
            for dy in range(-4, 5, 2):
                for dx in range(-4, 5, 2):
                    px, py = min(max(x + dx, 0), w - 1), min(max(y + dy, 0), h - 1)
                    yy = data[py * ys + px]
                    u = data[uo + (py // 2) * cs + px // 2]
                    v = data[vo + (py // 2) * cs + px // 2]
                    rgb = yuv_to_rgb(yy, u, v)
                    for i in range(3):
                        acc[i] += rgb[i]
                    n += 1
            out[f"{x},{y}"] = [round(c / n) for c in acc]
        return out

    def on_audio_sample(self, sink):
        sample = sink.emit("pull-sample")
        if sample is None:
            return Gst.FlowReturn.OK
        buf = sample.get_buffer()
        ok, m = buf.map(Gst.MapFlags.READ)
        if ok:
            chunk = array.array("h")
            chunk.frombytes(bytes(m.data[: len(m.data) // 2 * 2]))
            buf.unmap(m)
            if sys.byteorder != "little":
                chunk.byteswap()
            with self.lock:
                if self.wav is not None:
                    self.wav.extend(chunk)
                self.audio.extend(chunk)
                self.audio_total += len(chunk)
                if len(self.audio) > RATE:
                    del self.audio[: len(self.audio) - RATE]
        return Gst.FlowReturn.OK

    def rtp_stats(self):
        """Per received SSRC, webrtcbin's inbound-rtp figures: packets, lost, jitter."""
        promise = Gst.Promise.new()
        self.wb.emit("get-stats", None, promise)
        if promise.wait() != Gst.PromiseResult.REPLIED or promise.get_reply() is None:
            return {}
        out = {}

        def each(_field, value, _data):
            if isinstance(value, Gst.Structure) and value.get_name() == "inbound-rtp":
                # By SSRC: webrtcbin 1.22 labels every inbound stream's kind "audio" at times.
                ok_s, ssrc = value.get_uint("ssrc")
                kind = str(ssrc) if ok_s else "?"
                ok_p, packets = value.get_uint64("packets-received")
                ok_l, lost = value.get_int64("packets-lost")
                ok_j, jitter = value.get_double("jitter")
                ok_d, discarded = value.get_uint64("packets-discarded")
                out[kind] = {
                    "packets": packets if ok_p else None,
                    "lost": lost if ok_l else None,
                    "jitter_ms": round(jitter * 1000, 1) if ok_j else None,
                    "discarded": discarded if ok_d else None,
                }
            return True

        promise.get_reply().foreach(each, None)
        return out

    def report(self):
        rtp = self.rtp_stats()
        with self.lock:
            last = self.audio.tolist()
            frames, size, colours, total = self.frames, self.size, dict(self.colours), self.audio_total
        tones = {f"{f:g}": round(tone_db(last, f), 1) for f in self.args.tones} if len(last) == RATE else {}
        emit(
            "stats",
            t=round(time.monotonic() - self.start, 2),
            frames=frames,
            size=size,
            colours=colours,
            audio_samples=total,
            audio_rms=round(rms_db(last), 1) if last else None,
            tones=tones,
            rtp=rtp,
        )
        return not self.finishing

    # --- lifetime --------------------------------------------------------------------------

    def on_bus_error(self, _bus, msg):
        err, dbg = msg.parse_error()
        self.fail("pipeline error", source=msg.src.get_name(), error=err.message, debug=dbg)

    def fail(self, why, **fields):
        emit("error", reason=why, **fields)
        log(f"error: {why} {fields}")
        self.exit_code = 2
        self.finish()
        return False

    def finish(self):
        with self.lock:
            if self.finishing:
                return False
            self.finishing = True

        def leave():
            if self.location:
                try:
                    status, _, body = http("DELETE", self.location)
                    emit("deleted", status=status, body=body.strip())
                except Exception as e:  # noqa: BLE001 - reported, not raised
                    emit("deleted", status=None, body=str(e))
            GLib.idle_add(self.stop)

        threading.Thread(target=leave, daemon=True).start()
        return False

    def stop(self):
        self.pipe.set_state(Gst.State.NULL)
        if self.wav is not None:
            import wave

            with wave.open(self.args.wav, "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(RATE)
                w.writeframes(self.wav.tobytes())
        self.loop.quit()
        return False

    def run(self):
        if self.pipe.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            emit("error", reason="pipeline does not start")
            return 2
        if self.args.role in ("viewer", "participant"):
            GLib.timeout_add(1000, self.report)
        if self.args.duration > 0:
            GLib.timeout_add(int(self.args.duration * 1000), self.finish)
        for sig in (2, 15):  # SIGINT, SIGTERM: leave cleanly
            GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, self.finish)
        self.loop.run()
        emit("exit", code=self.exit_code)
        return self.exit_code


def colour(text):
    parts = [int(x) for x in text.split(",")]
    if len(parts) != 3 or not all(0 <= x <= 255 for x in parts):
        raise argparse.ArgumentTypeError("colour is R,G,B with 0..255 each")
    return tuple(parts)


def floats(text):
    return [float(x) for x in text.split(",") if x]


def points(text):
    out = []
    for p in text.split(";"):
        if p:
            x, y = p.split(",")
            out.append((int(x), int(y)))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8080", help="server base URL")
    p.add_argument("--room", required=True)
    p.add_argument("--name", help="display name (?name=)")
    p.add_argument(
        "--role",
        choices=["publisher", "viewer", "participant"],
        default="publisher",
        help="publisher: sendonly via POST /whip/{room}; viewer: recvonly via POST /whep/{room}; "
        "participant: sendrecv via POST /v1/rooms/{room}/participants",
    )
    p.add_argument("--path", help="POST to this path instead of the role's endpoint")
    p.add_argument("--bundle-policy", default="max-bundle", choices=["none", "balanced", "max-compat", "max-bundle"])
    p.add_argument("--codec", choices=["vp8", "h264"], default="vp8", help="video codec sent or received")
    p.add_argument("--colour", type=colour, default=(200, 40, 40), help="R,G,B of the solid-colour video")
    p.add_argument("--pattern", default="solid-color", help="videotestsrc pattern")
    p.add_argument("--tone", type=float, default=660.0, help="sine frequency sent, Hz")
    p.add_argument("--volume", type=float, default=0.25, help="sine amplitude 0..1")
    p.add_argument("--keyframe-interval", type=int, default=60, help="vp8enc keyframe-max-dist, frames")
    p.add_argument("--audio-only", action="store_true")
    p.add_argument("--video-only", action="store_true")
    p.add_argument(
        "--ssrc-mode",
        choices=["keep", "wrong", "none"],
        default="keep",
        help="munge the posted offer: wrong = other numbers in every a=ssrc (the payloader keeps sending "
        "the real SSRC); none = no a=ssrc / a=ssrc-group lines",
    )
    p.add_argument("--tones", type=floats, default=[], help="frequencies to measure in what is received, Hz")
    p.add_argument("--points", type=points, default=[], help="x,y;x,y pixels whose colour stats report")
    p.add_argument("--wav", help="write all decoded audio (48 kHz mono S16) to this WAV file at exit")
    p.add_argument("--duration", type=float, default=20.0, help="seconds before leaving (0: until SIGTERM)")
    p.add_argument("--gather-timeout", type=int, default=10, help="seconds to wait for ICE gathering")
    p.add_argument("--print-sdp", action="store_true", help="log the offer and answer on stderr")
    args = p.parse_args()
    if args.audio_only and args.video_only:
        p.error("--audio-only and --video-only exclude each other")
    Gst.init(None)
    sys.exit(Peer(args).run())


if __name__ == "__main__":
    main()
