//! Minimal SVG charts, written by hand: a step/line chart of series over time and a grouped bar chart
//! with an optional threshold line. Being written.
