//! One module per subcommand group; each exposes `Args` and `run(Args)`.

pub mod eventlog;
pub mod pki;
pub mod tre;
pub mod uicc;
