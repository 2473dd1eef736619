//! Report writing shared by the demo and the simulator: SVG charts (no dependencies) and markdown.

pub mod svg;
