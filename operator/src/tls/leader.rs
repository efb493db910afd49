//! The certificate's leader election is the crate's general one (one Lease
//! per duty: the certificate and the controller are elected separately, so
//! a replica busy issuing a certificate never blocks reconciles).

pub use crate::leader::LeaderLease;
