//! Outputs of a room beyond its participants: recordings of the composite and the full mix, and
//! live egress. Each is a pipeline of its own, fed through a [`tap::Tap`] on the room's encoded
//! video, so an output that is slow or fails never stalls the room; a recording costs a mux, not
//! an encode, when the container takes the room's codec.

pub mod egress;
pub mod recording;
pub mod tap;
