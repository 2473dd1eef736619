//! Text tables and relative times for people: columns as wide as their widest cell, two spaces apart.

/// Renders `rows` (the first is the header) with every column as wide as its widest cell; the columns
/// in `right` (numbers) right-aligned, the others left-aligned; the last column unpadded.
pub fn render(rows: Vec<Vec<String>>, right: &[usize]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut width = vec![0usize; columns];
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            let pad = width[i].saturating_sub(c.chars().count());
            if i + 1 == r.len() && !right.contains(&i) {
                line.push_str(c);
            } else if right.contains(&i) {
                line.push_str(&" ".repeat(pad));
                line.push_str(c);
            } else {
                line.push_str(c);
                line.push_str(&" ".repeat(pad));
            }
            if i + 1 < r.len() {
                line.push_str("  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `12s ago`, `3m ago`: how long since `at`, to the unit that matters; `-` for never.
pub fn ago(at: u64, now: u64) -> String {
    match now.saturating_sub(at) {
        _ if at == 0 => "-".into(),
        secs @ 0..60 => format!("{secs}s ago"),
        // Whole minutes from there: a table of `3m10s` is noise.
        secs => format!("{} ago", crate::duration::format(secs / 60 * 60)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_align_on_their_widest_cell_and_numbers_to_the_right() {
        let rows = vec![
            vec!["BUNDLE".into(), "BYTES".into(), "DIGEST".into()],
            vec!["a-very-long-model-name@10.20.30".into(), "7".into(), "abc".into()],
            vec!["d@1.0.0".into(), "123456".into(), "def".into()],
        ];
        let text = super::render(rows, &[1]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "BUNDLE                            BYTES  DIGEST");
        assert_eq!(lines[1], "a-very-long-model-name@10.20.30       7  abc");
        assert_eq!(lines[2], "d@1.0.0                          123456  def");
        let at = |l: &str| l.find("abc").or(l.find("def")).or(l.find("DIGEST"));
        assert!(lines.iter().all(|l| at(l) == at(lines[0])), "{text}");
    }

    #[test]
    fn times_ago_round_to_the_unit_that_matters() {
        assert_eq!(super::ago(0, 100), "-");
        assert_eq!(super::ago(90, 100), "10s ago");
        assert_eq!(super::ago(100, 100 + 190), "3m ago");
        assert_eq!(super::ago(100, 100 + 7_230), "2h ago");
    }
}
