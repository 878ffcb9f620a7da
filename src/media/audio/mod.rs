//! The room's audio: Opus in → decode → mix-minus by subtraction → Opus out, on one thread per room.
//!
//! Every 20 ms the mixer takes one frame from each publisher's jitter buffer, but decodes (mono,
//! 48 kHz, [`mix::FRAME_SAMPLES`] samples) only some of them:
//! - publishers that send the RFC 6464 audio level are ranked by it, and only the K loudest
//!   talkers (default [`DEFAULT_MIX_TALKERS`], see [`AudioMixer::set_mix_talkers`]) are decoded,
//!   with hysteresis (a talker keeps its slot until another is louder by 6 dB for 200 ms, or it
//!   has fallen silent; see [`select`]). The level arrives with the newest packet, about a
//!   jitter-buffer depth (≈ 40 ms) ahead of the frame played, so a new talker's first words are
//!   not lost. A newly selected decoder is reset and its first frame faded in; a deselected one
//!   is decoded once more and faded out. The others' frames are discarded undecoded, so their
//!   jitter buffers stay in step, and count as silence;
//! - publishers that do not send the level are decoded every tick (nothing else tells their level);
//! - muted publishers are never decoded.
//!
//! Decodes per tick are therefore at most K + the publishers without the extension. The decoded
//! frames are summed once into `total`, and encoded:
//! - one shared encode of the full mix (`total`), for viewers and for participants who contribute
//!   nothing to it (silent, or not among the K decoded): their share of the total is nothing;
//! - one encode of `total − own` for each participant who is decoded, talking and listening.
//!
//! So encodes per tick are at most talkers + 1 (≤ K + 1 when everyone sends the level), whatever
//! the room size. The result goes out on a broadcast channel as one [`MixFrame`] per tick; each
//! receiver picks its personal payload if it has one, else the shared one.

pub mod jitter;
pub mod mix;
pub mod select;
pub mod speaker;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::broadcast;

use jitter::{JitterBuffer, Pop};
use mix::{FRAME_SAMPLES, Limiter};
pub use select::DEFAULT_MIX_TALKERS;
use select::{Action, Talker};
use speaker::{SpeakerDetector, SpeakerUpdate};

/// Called from the mixer thread when the active speaker or the set of talkers changes, with the
/// tick (20 ms units) it happened at.
pub type SpeakerListener = Arc<dyn Fn(&SpeakerUpdate, u64) + Send + Sync>;

/// Own audio above this mean level (dBFS) makes a participant a talker.
const TALK_DBFS: f32 = -55.0;
/// A talker keeps its own encode this long after its last loud frame (ticks of 20 ms).
const TALK_HANGOVER_TICKS: u64 = 50;
/// Mix frames buffered for slow receivers (1 s).
const FANOUT_CAPACITY: usize = 50;

/// One 20 ms tick of the room's mixed audio, already Opus-encoded.
#[derive(Debug)]
pub struct MixFrame {
    /// Tick number since the mixer started (RTP timestamp = tick × 960).
    pub tick: u64,
    /// The full mix: for viewers and for participants who are not talking.
    pub shared: Bytes,
    /// `total − own` for each talking listener, by participant id.
    pub personal: HashMap<String, Bytes>,
}

impl MixFrame {
    /// The payload participant `id` should hear.
    pub fn for_participant(&self, id: &str) -> &Bytes {
        self.personal.get(id).unwrap_or(&self.shared)
    }
}

/// Counters of a room's mixer.
#[derive(Debug, Default)]
pub struct AudioStats {
    /// Ticks mixed.
    pub ticks: AtomicU64,
    /// Opus encodes done, in total.
    pub encodes: AtomicU64,
    /// Opus encodes in the last tick (≤ talkers + 1).
    pub encodes_last_tick: AtomicU64,
    /// Opus decodes (packets and loss concealments) done, in total.
    pub decodes: AtomicU64,
    /// Opus decodes in the last tick (≤ K loudest talkers + publishers without the RFC 6464
    /// extension).
    pub decodes_last_tick: AtomicU64,
    /// Ticks that started late by more than one frame (the thread was starved).
    pub late_ticks: AtomicU64,
    /// Publishers' packets that arrived after their turn (already concealed): dropped.
    pub packets_late: AtomicU64,
    /// Publishers' packets dropped because over 120 ms waited in a jitter buffer (a burst).
    pub packets_overflow: AtomicU64,
    /// Frames concealed (Opus PLC) because a decoded publisher's packet was missing at its tick.
    pub frames_concealed: AtomicU64,
    /// Missing frames decoded from the next packet's in-band FEC instead (RFC 6716 §2.1.7).
    pub frames_fec_recovered: AtomicU64,
}

enum Cmd {
    AddSource {
        id: String,
        listens: bool,
    },
    RemoveSource {
        id: String,
    },
    Packet {
        id: String,
        seq: u16,
        payload: Bytes,
        level: Option<u8>,
    },
    Mute {
        id: String,
        muted: bool,
    },
    MixTalkers(usize),
    /// End the thread and hand the mixer back (see [`AudioMixer::park`]).
    Park(mpsc::SyncSender<IdleMixer>),
}

/// Settings of a room's mixer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MixerConfig {
    /// Opus bitrate of every encode, kbit/s.
    pub kbps: u32,
    /// How many of the loudest RFC 6464 senders are decoded and mixed per tick (≥ 1; default
    /// [`DEFAULT_MIX_TALKERS`]; `usize::MAX` mixes every talker).
    pub mix_talkers: usize,
}

impl MixerConfig {
    /// `kbps` kbit/s, [`DEFAULT_MIX_TALKERS`] talkers.
    pub fn new(kbps: u32) -> Self {
        Self { kbps, mix_talkers: DEFAULT_MIX_TALKERS }
    }
}

/// Handle to a room's mixer thread; the thread stops when the last handle drops.
#[derive(Clone)]
pub struct AudioMixer {
    tx: Arc<Mutex<mpsc::Sender<Cmd>>>,
    out: broadcast::Sender<Arc<MixFrame>>,
    stats: Arc<AudioStats>,
    /// The mixer and its commands, until [`AudioMixer::wake`] hands them to its thread.
    idle: Arc<Mutex<Option<IdleMixer>>>,
}

/// A mixer not running yet: its state, its commands and its room's name.
type IdleMixer = (Mixer, mpsc::Receiver<Cmd>, String);

/// Errors starting the mixer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AudioError {
    /// libopus refused a setting.
    #[error("opus: {0}")]
    Opus(#[from] opus::Error),
    /// The thread could not be spawned.
    #[error("thread: {0}")]
    Thread(#[from] std::io::Error),
}

impl AudioMixer {
    /// Starts the mixer thread for `room`, encoding at `kbps` kbit/s and mixing the
    /// [`DEFAULT_MIX_TALKERS`] loudest talkers; `on_speaker` hears about active speaker changes.
    ///
    /// # Errors
    /// [`AudioError`] if libopus rejects the settings or the thread cannot start.
    pub fn start(room: &str, kbps: u32, on_speaker: Option<SpeakerListener>) -> Result<Self, AudioError> {
        Self::start_with(room, MixerConfig::new(kbps), on_speaker)
    }

    /// Starts the mixer thread for `room` with `config`; `on_speaker` hears about active speaker
    /// changes.
    ///
    /// # Errors
    /// [`AudioError`] if libopus rejects the settings or the thread cannot start.
    pub fn start_with(
        room: &str,
        config: MixerConfig,
        on_speaker: Option<SpeakerListener>,
    ) -> Result<Self, AudioError> {
        let mixer = Self::idle(room, config, on_speaker)?;
        mixer.wake()?;
        Ok(mixer)
    }

    /// Prepares the mixer for `room` as [`AudioMixer::start_with`] does, without its thread: no
    /// tick runs (commands wait) until [`AudioMixer::wake`]. An empty room costs nothing.
    ///
    /// # Errors
    /// [`AudioError::Opus`] if libopus rejects the settings.
    pub fn idle(room: &str, config: MixerConfig, on_speaker: Option<SpeakerListener>) -> Result<Self, AudioError> {
        let (tx, rx) = mpsc::channel();
        let (out, _) = broadcast::channel(FANOUT_CAPACITY);
        let stats = Arc::new(AudioStats::default());
        let mut m = Mixer::new(config.kbps, out.clone(), stats.clone())?;
        m.mix_talkers = config.mix_talkers.max(1);
        m.on_speaker = on_speaker;
        let idle = Arc::new(Mutex::new(Some((m, rx, room.to_string()))));
        Ok(Self { tx: Arc::new(Mutex::new(tx)), out, stats, idle })
    }

    /// Starts the mixer thread, if it is not running yet.
    ///
    /// # Errors
    /// [`AudioError::Thread`] if the thread cannot start.
    pub fn wake(&self) -> Result<(), AudioError> {
        let mut idle = self.idle.lock().unwrap();
        if let Some((mut m, rx, room)) = idle.take() {
            std::thread::Builder::new().name(format!("mix-{room}")).spawn(move || {
                if let Some(back) = m.run(&rx, &room) {
                    let _ = back.send((m, rx, room));
                }
            })?;
        }
        Ok(())
    }

    /// Ends the mixer thread, keeping the mixer's state and the commands not yet taken, until the
    /// next [`AudioMixer::wake`]: for a room nobody is in. Blocks until the thread has taken the
    /// request (at most a tick, 20 ms). Does nothing on an idle mixer.
    pub fn park(&self) {
        let mut idle = self.idle.lock().unwrap();
        if idle.is_some() {
            return;
        }
        let (back, parked) = mpsc::sync_channel(1);
        self.send(Cmd::Park(back));
        match parked.recv_timeout(Duration::from_secs(2)) {
            Ok(m) => *idle = Some(m),
            Err(e) => tracing::warn!("mixer did not park: {e}"),
        }
    }

    fn send(&self, c: Cmd) {
        let _ = self.tx.lock().unwrap().send(c);
    }

    /// Adds a publisher's audio. `listens`: it also receives the mix (so it needs mix-minus).
    pub fn add_source(&self, id: &str, listens: bool) {
        self.send(Cmd::AddSource { id: id.into(), listens });
    }

    /// Removes a publisher's audio.
    pub fn remove_source(&self, id: &str) {
        self.send(Cmd::RemoveSource { id: id.into() });
    }

    /// Server-side mute: the source is left out of every mix while `muted`.
    pub fn set_muted(&self, id: &str, muted: bool) {
        self.send(Cmd::Mute { id: id.into(), muted });
    }

    /// Sets how many of the loudest RFC 6464 senders are decoded and mixed per tick (`k` < 1
    /// counts as 1; `usize::MAX` mixes every talker). Takes effect on the next tick; lowering it
    /// fades out the quietest talkers over one frame.
    pub fn set_mix_talkers(&self, k: usize) {
        self.send(Cmd::MixTalkers(k));
    }

    /// Queues one Opus packet (RTP payload) of publisher `id` with RTP sequence number `seq` and,
    /// when the publisher sends the RFC 6464 extension, its level (`-dBov`, 0..=127).
    pub fn push(&self, id: &str, seq: u16, payload: Bytes, level: Option<u8>) {
        self.send(Cmd::Packet { id: id.into(), seq, payload, level });
    }

    /// A receiver of the mixed frames.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<MixFrame>> {
        self.out.subscribe()
    }

    /// The mixer's counters.
    pub fn stats(&self) -> Arc<AudioStats> {
        self.stats.clone()
    }
}

struct Source {
    listens: bool,
    muted: bool,
    jitter: JitterBuffer,
    decoder: opus::Decoder,
    pcm: Vec<i16>,
    last_voice_tick: Option<u64>,
    /// Level from the last RFC 6464 extension, dBFS.
    ext_level: Option<f32>,
    /// Present while decoded, talking and listening.
    encoder: Option<(opus::Encoder, Limiter)>,
    /// K-loudest selection state (used once `ext_level` is known).
    talk: Talker,
    /// This tick's frame from the jitter buffer, between popping and decoding.
    pending: Pop,
    /// Decoded this tick (so `pcm` holds its contribution to the total).
    decoded: bool,
    /// The decoder was reset and has not produced a frame yet: fade its first one in.
    fresh: bool,
}

struct Mixer {
    kbps: u32,
    /// Talkers decoded per tick among the RFC 6464 senders (≥ 1).
    mix_talkers: usize,
    /// By id, so that ties in the selection resolve the same way every run.
    sources: BTreeMap<String, Source>,
    shared: opus::Encoder,
    shared_limiter: Limiter,
    total: Vec<i32>,
    out_pcm: Vec<i16>,
    out: broadcast::Sender<Arc<MixFrame>>,
    stats: Arc<AudioStats>,
    detector: SpeakerDetector,
    on_speaker: Option<SpeakerListener>,
}

fn encoder(kbps: u32) -> Result<opus::Encoder, opus::Error> {
    let mut e = opus::Encoder::new(48000, opus::Channels::Mono, opus::Application::Voip)?;
    e.set_bitrate(opus::Bitrate::Bits(kbps as i32 * 1000))?;
    e.set_inband_fec(true)?;
    Ok(e)
}

impl Mixer {
    fn new(kbps: u32, out: broadcast::Sender<Arc<MixFrame>>, stats: Arc<AudioStats>) -> Result<Self, opus::Error> {
        Ok(Self {
            kbps,
            mix_talkers: DEFAULT_MIX_TALKERS,
            sources: BTreeMap::new(),
            shared: encoder(kbps)?,
            shared_limiter: Limiter::default(),
            total: vec![0; FRAME_SAMPLES],
            out_pcm: vec![0; FRAME_SAMPLES],
            out,
            stats,
            detector: SpeakerDetector::default(),
            on_speaker: None,
        })
    }

    /// Ticks until every handle is gone (`None`) or a park is asked (`Some`: where to send the
    /// mixer back).
    fn run(&mut self, rx: &mpsc::Receiver<Cmd>, room: &str) -> Option<mpsc::SyncSender<IdleMixer>> {
        let frame = Duration::from_millis(20);
        let mut next = Instant::now() + frame;
        let mut tick: u64 = 0;
        loop {
            // Sleep until the tick is due, then take everything that arrived. Packets are only
            // read from the jitter buffers at the tick, so applying them then changes nothing —
            // and publishers' packets never wake this thread (one wake per 20 ms, not one per
            // packet: 5000 futex wakes a second in a 100-publisher room).
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
            loop {
                match rx.try_recv() {
                    Ok(Cmd::Park(back)) => {
                        tracing::debug!(%room, "mixer parked");
                        return Some(back);
                    }
                    Ok(c) => self.apply(c, room),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        tracing::debug!(%room, "mixer stopped");
                        return None;
                    }
                }
            }
            self.tick(tick);
            tick += 1;
            next += frame;
            let now = Instant::now();
            if now > next + frame {
                // Starved for more than a frame: skip ahead rather than burst.
                self.stats.late_ticks.fetch_add(1, Ordering::Relaxed);
                next = now + frame;
            }
        }
    }

    fn apply(&mut self, c: Cmd, room: &str) {
        match c {
            Cmd::AddSource { id, listens } => match opus::Decoder::new(48000, opus::Channels::Mono) {
                Ok(decoder) => {
                    self.sources.insert(
                        id,
                        Source {
                            listens,
                            muted: false,
                            jitter: JitterBuffer::default(),
                            decoder,
                            pcm: vec![0; FRAME_SAMPLES],
                            last_voice_tick: None,
                            ext_level: None,
                            encoder: None,
                            talk: Talker::default(),
                            pending: Pop::Idle,
                            decoded: false,
                            fresh: false,
                        },
                    );
                }
                Err(e) => tracing::error!(%room, participant = %id, "opus decoder: {e}"),
            },
            Cmd::RemoveSource { id } => {
                self.sources.remove(&id);
                self.detector.remove(&id);
            }
            Cmd::Mute { id, muted } => {
                if let Some(s) = self.sources.get_mut(&id) {
                    s.muted = muted;
                }
            }
            Cmd::MixTalkers(k) => self.mix_talkers = k.max(1),
            Cmd::Park(_) => {} // taken by `run`
            Cmd::Packet { id, seq, payload, level } => {
                if let Some(s) = self.sources.get_mut(&id) {
                    if !s.jitter.push(seq, payload) {
                        self.stats.packets_late.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(l) = level {
                        s.ext_level = Some(-(l.min(127) as f32));
                    }
                }
            }
        }
    }

    fn tick(&mut self, tick: u64) {
        // 1. Every jitter buffer gives its frame, decoded or not, so all stay in step; the RFC 6464
        //    senders are ranked (an idle buffer counts as silence).
        for s in self.sources.values_mut() {
            s.pending = s.jitter.pop();
            let overflowed = s.jitter.take_overflowed();
            if overflowed > 0 {
                self.stats.packets_overflow.fetch_add(overflowed, Ordering::Relaxed);
            }
            match s.ext_level {
                _ if s.muted => s.talk.reset(),
                Some(l) => s.talk.feed(if s.pending == Pop::Idle { select::SILENCE_DBOV } else { l }),
                None => {}
            }
        }
        let mut cands: Vec<&mut Talker> =
            self.sources.values_mut().filter(|s| !s.muted && s.ext_level.is_some()).map(|s| &mut s.talk).collect();
        select::select(&mut cands, self.mix_talkers);

        // 2. Decode the selected, the publishers without the level, and nobody muted.
        let mut decodes = 0u64;
        for s in self.sources.values_mut() {
            let pop = std::mem::replace(&mut s.pending, Pop::Idle);
            let action = match s.ext_level {
                _ if s.muted => Action::Skip,
                Some(_) => s.talk.action(),
                None => Action::Decode,
            };
            let decode = action != Action::Skip;
            if decode && !s.decoded {
                // (Re)starting: no stale state from frames it never saw.
                let _ = s.decoder.reset_state();
                s.fresh = true;
            }
            s.decoded = decode;
            let n = match pop {
                _ if !decode => 0,
                Pop::Packet(p) => {
                    decodes += 1;
                    s.decoder.decode(&p, &mut s.pcm, false).unwrap_or(0)
                }
                Pop::Lost => {
                    decodes += 1;
                    self.stats.frames_concealed.fetch_add(1, Ordering::Relaxed);
                    s.decoder.decode(&[], &mut s.pcm, false).unwrap_or(0)
                }
                Pop::Recover(next) => {
                    decodes += 1;
                    self.stats.frames_fec_recovered.fetch_add(1, Ordering::Relaxed);
                    // Without FEC in it, libopus conceals the frame (PLC) from the same call.
                    s.decoder.decode(&next, &mut s.pcm, true).unwrap_or(0)
                }
                Pop::Idle => 0,
            };
            s.pcm[n.min(FRAME_SAMPLES)..].fill(0);
            if n > 0 && std::mem::take(&mut s.fresh) {
                mix::fade_in(&mut s.pcm);
            }
            if action == Action::Last {
                mix::fade_out(&mut s.pcm);
            }
            if decode && mix::level_dbfs(&s.pcm) > TALK_DBFS {
                s.last_voice_tick = Some(tick);
            }
        }
        // Active speaker: from the RFC 6464 level when sent, else the decoded frame.
        if self.on_speaker.is_some() {
            let levels: Vec<(&str, f32)> = self
                .sources
                .iter()
                .map(|(id, s)| {
                    let l = if s.muted { -100.0 } else { s.ext_level.unwrap_or_else(|| mix::level_dbfs(&s.pcm)) };
                    (id.as_str(), l)
                })
                .collect();
            if let (Some(u), Some(cb)) = (self.detector.tick(&levels), &self.on_speaker) {
                cb(&u, tick);
            }
        }
        // 2. The total, once.
        let frames: Vec<&[i16]> = self.sources.values().filter(|s| s.decoded).map(|s| s.pcm.as_slice()).collect();
        mix::sum_into(&mut self.total, &frames);

        // 3. Shared encode of the full mix.
        let mut encodes = 1u64;
        let mut buf = [0u8; 1500];
        mix::mix_minus(&self.total, None, &mut self.shared_limiter, &mut self.out_pcm);
        let shared = match self.shared.encode(&self.out_pcm, &mut buf) {
            Ok(n) => Bytes::copy_from_slice(&buf[..n]),
            Err(_) => Bytes::new(),
        };

        // 4. total − own for each decoded, talking listener (the others' share of total is nothing).
        let mut personal = HashMap::new();
        for (id, s) in self.sources.iter_mut() {
            let talking = s.last_voice_tick.is_some_and(|t| tick - t < TALK_HANGOVER_TICKS);
            if !(s.decoded && talking && s.listens) {
                s.encoder = None;
                continue;
            }
            if s.encoder.is_none() {
                match encoder(self.kbps) {
                    Ok(e) => s.encoder = Some((e, self.shared_limiter.clone())),
                    Err(_) => continue,
                }
            }
            let (enc, lim) = s.encoder.as_mut().unwrap();
            mix::mix_minus(&self.total, Some(&s.pcm), lim, &mut self.out_pcm);
            if let Ok(n) = enc.encode(&self.out_pcm, &mut buf) {
                personal.insert(id.clone(), Bytes::copy_from_slice(&buf[..n]));
                encodes += 1;
            }
        }
        self.stats.ticks.fetch_add(1, Ordering::Relaxed);
        self.stats.encodes.fetch_add(encodes, Ordering::Relaxed);
        self.stats.encodes_last_tick.store(encodes, Ordering::Relaxed);
        self.stats.decodes.fetch_add(decodes, Ordering::Relaxed);
        self.stats.decodes_last_tick.store(decodes, Ordering::Relaxed);
        let _ = self.out.send(Arc::new(MixFrame { tick, shared, personal }));
    }
}

#[cfg(test)]
mod tests;
