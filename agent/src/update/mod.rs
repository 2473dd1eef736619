//! Model updates over the fleet link: the pure machine (`machine`, its state and messages in `job`) and the shell that performs its
//! effects against the store, the runtime and the link (`driver`).

mod job;
pub mod machine;
