//! Answers a receiver's NACKs (RFC 4585 §6.2.1) for the composite from its encoder branch's
//! shared history ([`crate::media::retransmit`]) instead of webrtc-rs's per-receiver send buffer:
//! in webrtc-rs's `NackResponder` slot, so everything wire-ward of it (TWCC stamping, SRTP) treats
//! a retransmission as it treats that responder's. With RTX negotiated (RFC 4588 §4) the packet is
//! resent on the RTX SSRC and payload type with the original sequence number ahead of the payload,
//! as webrtc-rs does; else as it was. Outgoing packets pass through untouched (nothing is copied
//! or kept per receiver).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use rtc::interceptor::{Attribute, AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;
use rtc::shared::TransportContext;
use rtc::shared::error::Error;

use super::SessionCounters;
use crate::media::retransmit::SentMap;

/// One local stream that negotiated NACK.
struct Stream {
    payload_type: u8,
    /// RTX SSRC and payload type, when negotiated.
    rtx: Option<(u32, u8)>,
    rtx_seq: u16,
}

/// The NACK responder of one receiver's peer connection: looks NACKed sequence numbers of its
/// composite track up in `sent` and queues the packets again.
pub struct SharedNackResponder {
    sent: Arc<SentMap>,
    counters: Arc<SessionCounters>,
    streams: HashMap<u32, Stream>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl SharedNackResponder {
    /// A responder answering from `sent` (the composite track's map, which its send loop fills),
    /// counting answered and unanswered packets in `counters`.
    pub fn new(sent: Arc<SentMap>, counters: Arc<SessionCounters>) -> Self {
        Self { sent, counters, streams: HashMap::new(), read: VecDeque::new(), write: VecDeque::new() }
    }

    fn answer(&mut self, now: Instant, nack: &TransportLayerNack) {
        let Some(stream) = self.streams.get_mut(&nack.media_ssrc) else { return };
        for pair in &nack.nacks {
            for seq in pair.packet_list() {
                let Some(mut p) = self.sent.packet(seq) else {
                    self.counters.nacks_unanswered.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                p.header.ssrc = nack.media_ssrc;
                p.header.payload_type = stream.payload_type;
                if let Some((ssrc, pt)) = stream.rtx {
                    let mut payload = Vec::with_capacity(2 + p.payload.len());
                    payload.extend_from_slice(&seq.to_be_bytes());
                    payload.extend_from_slice(&p.payload);
                    p.header.ssrc = ssrc;
                    p.header.payload_type = pt;
                    p.header.sequence_number = stream.rtx_seq;
                    stream.rtx_seq = stream.rtx_seq.wrapping_add(1);
                    p.payload = payload.into();
                    tracing::trace!(seq, rtx_seq = p.header.sequence_number, "resent on RTX");
                }
                self.counters.retransmissions.fetch_add(1, Ordering::Relaxed);
                // Tagged as webrtc-rs's responder tags them: the send-side estimator counts them
                // as bytes on the wire, not as the original transmission.
                self.write.push_back(TaggedPacket {
                    now,
                    transport: TransportContext::default(),
                    message: AttributedPacket::new(Packet::Rtp(p)).with(Attribute::Retransmission),
                });
            }
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for SharedNackResponder {
    super::queued_passthrough!();

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            for p in packets {
                if let Some(nack) = p.as_any().downcast_ref::<TransportLayerNack>() {
                    self.answer(msg.now, nack);
                }
            }
        }
        self.read.push_back(msg);
        Ok(())
    }
}

impl Interceptor for SharedNackResponder {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        // Generic NACK negotiated for the stream (`a=rtcp-fb:<pt> nack`, no parameter).
        if info.rtcp_feedback.iter().any(|fb| fb.typ == "nack" && fb.parameter.is_empty()) {
            let rtx = info.ssrc_rtx.zip(info.payload_type_rtx);
            self.streams.insert(info.ssrc, Stream { payload_type: info.payload_type, rtx, rtx_seq: 0 });
        }
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.streams.remove(&info.ssrc);
    }

    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}

    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
