//! Report writing shared by the demo and the simulator: SVG charts (no dependencies) and markdown.

pub mod svg;

/// A markdown table. Cells are escaped (`|` and line breaks would break the row); short rows are padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let cell = |s: &str| s.replace('|', "\\|").replace(['\n', '\r'], " ");
    let mut out = String::new();
    out.push_str(&format!("| {} |\n", headers.iter().map(|h| cell(h)).collect::<Vec<_>>().join(" | ")));
    out.push_str(&format!("|{}\n", " --- |".repeat(headers.len())));
    for row in rows {
        let cells: Vec<String> = (0..headers.len()).map(|i| row.get(i).map_or(String::new(), |c| cell(c))).collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_escape_pipes_and_pad_short_rows() {
        let t = table(&["a", "b"], &[vec!["x|y".into()], vec!["1".into(), "2\n3".into()]]);
        assert_eq!(t, "| a | b |\n| --- | --- |\n| x\\|y |  |\n| 1 | 2 3 |\n");
    }
}
