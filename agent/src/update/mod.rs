//! Model updates over the fleet link: the pure machine (`machine`) and the shell that performs its
//! effects against the store, the runtime and the link (`driver`).

pub mod machine;
