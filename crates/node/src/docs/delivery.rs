//! Where one recipient's delivery stands. The proto carries it as a string
//! (`RecipientTracking.delivery`, for the CLI and other clients); it is
//! converted here and nowhere else.

use truc_proto::v1::RecipientTracking;

/// The state of one delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Accepted, not yet attempted.
    Pending,
    /// Attempted, failed in a way a retry may fix; tried again later.
    Retrying,
    /// On the recipient's node's disk.
    Delivered,
    /// Refused in a way no retry can fix; not tried again.
    Failed,
}

impl Delivery {
    /// The string the proto carries.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Delivery::Pending => "pending",
            Delivery::Retrying => "retrying",
            Delivery::Delivered => "delivered",
            Delivery::Failed => "failed",
        }
    }

    /// The state recorded in `r` (an unknown string reads as pending: the
    /// worker will try, and record what it finds).
    pub(crate) fn of(r: &RecipientTracking) -> Delivery {
        match r.delivery.as_str() {
            "retrying" => Delivery::Retrying,
            "delivered" => Delivery::Delivered,
            "failed" => Delivery::Failed,
            _ => Delivery::Pending,
        }
    }

    /// Records this state in `r`.
    pub(crate) fn set(self, r: &mut RecipientTracking) {
        r.delivery = self.as_str().to_string();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_round_trips_through_the_proto_string() {
        for d in [
            Delivery::Pending,
            Delivery::Retrying,
            Delivery::Delivered,
            Delivery::Failed,
        ] {
            let mut r = RecipientTracking::default();
            d.set(&mut r);
            assert_eq!(Delivery::of(&r), d);
        }
        let r = RecipientTracking {
            delivery: "garbage".into(),
            ..RecipientTracking::default()
        };
        assert_eq!(Delivery::of(&r), Delivery::Pending);
    }
}
