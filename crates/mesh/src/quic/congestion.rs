//! Cubic, with room for two datagrams in flight however small its window gets.
//!
//! A QUIC receiver acknowledges every second packet at once, but a lone packet only
//! after its maximum ACK delay (25 ms by default). quinn sends the next datagram only
//! while the bytes in flight plus up to two datagrams (the one it is building and the
//! next) stay below the congestion window, so a window of two datagrams, the smallest
//! RFC 9002 allows, keeps one packet in flight and every round trip waits out the
//! receiver's delay. With 64 KiB datagrams on loopback that is how a connection
//! started: Cubic's window starts at 14,720 bytes, and path MTU discovery growing the
//! datagrams raises it only to two of them, so slow start crept along at one packet
//! per 25 ms. A window of at least three datagrams keeps two in flight, and the
//! receiver's acknowledgement comes at once.

use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

use quinn::congestion::{Controller, ControllerFactory, ControllerMetrics, CubicConfig};
use quinn_proto::RttEstimator;

/// Builds Cubic controllers that always keep two datagrams of the current size in flight.
#[derive(Debug, Default)]
pub(super) struct TwoInFlightCubic(CubicConfig);

impl ControllerFactory for TwoInFlightCubic {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(TwoInFlight {
            inner: Arc::new(self.0.clone()).build(now, current_mtu),
            mtu: current_mtu.into(),
        })
    }
}

/// A controller whose window is at least three datagrams and one byte.
struct TwoInFlight {
    inner: Box<dyn Controller>,
    mtu: u64,
}

impl TwoInFlight {
    fn floor(&self) -> u64 {
        3 * self.mtu + 1
    }
}

impl Controller for TwoInFlight {
    fn on_sent(&mut self, now: Instant, bytes: u64, last_packet_number: u64) {
        self.inner.on_sent(now, bytes, last_packet_number)
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &RttEstimator,
    ) {
        self.inner.on_ack(now, sent, bytes, app_limited, rtt)
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        self.inner
            .on_end_acks(now, in_flight, app_limited, largest_packet_num_acked)
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        self.inner
            .on_congestion_event(now, sent, is_persistent_congestion, lost_bytes)
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.mtu = new_mtu.into();
        self.inner.on_mtu_update(new_mtu)
    }

    fn window(&self) -> u64 {
        self.inner.window().max(self.floor())
    }

    fn metrics(&self) -> ControllerMetrics {
        let mut metrics = self.inner.metrics();
        metrics.congestion_window = self.window();
        metrics
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(TwoInFlight {
            inner: self.inner.clone_box(),
            mtu: self.mtu,
        })
    }

    fn initial_window(&self) -> u64 {
        self.inner.initial_window()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_keeps_two_datagrams_of_the_current_size_in_flight() {
        let factory = Arc::new(TwoInFlightCubic::default());
        let mut controller = factory.build(Instant::now(), 1200);
        // Cubic's own initial window (14,720 bytes) already fits many 1,200-byte packets.
        assert_eq!(controller.window(), controller.initial_window());
        assert!(controller.window() > 2 * 1200);
        // Once MTU discovery reaches 64 KiB: one in flight, one being built and the next.
        controller.on_mtu_update(65_507);
        assert!(controller.window() > 3 * 65_507);
        // A persistent congestion collapse leaves the same.
        let now = Instant::now();
        controller.on_congestion_event(now, now, true, 65_507);
        assert_eq!(controller.window(), 3 * 65_507 + 1);
        assert_eq!(controller.metrics().congestion_window, 3 * 65_507 + 1);
    }
}
