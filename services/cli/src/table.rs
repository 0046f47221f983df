//! Plain-text tables for the `list` commands: a header, columns padded to their widest cell.

/// Renders `rows` under `header`, two spaces between columns, no trailing spaces.
pub(crate) fn render<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|title| title.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = header.map(str::to_owned);
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn columns_align() {
        let table = render(
            ["NAME", "ID"],
            &[["a".into(), "1".into()], ["longer name".into(), "22".into()]],
        );
        assert_eq!(table, "NAME         ID\na            1\nlonger name  22\n");
    }
}
