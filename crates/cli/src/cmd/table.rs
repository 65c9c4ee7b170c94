//! The transaction table printed by `truc demo`, `truc report` and
//! `truc audit verify`, so that their counts can be compared line by line.

use std::collections::BTreeMap;

/// One row's key: client, provider, service, kind, outcome.
pub(super) type RowKey = (String, String, String, String, String);

/// A plain table as the CLI prints them: no borders, a header line, columns
/// two spaces apart, the columns from `right_from` on right-aligned, no
/// trailing spaces.
pub(super) fn render<R, C>(header: &[&str], rows: R, right_from: usize) -> String
where
    R: IntoIterator<Item = C>,
    C: IntoIterator,
    C::Item: Into<comfy_table::Cell>,
{
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    table.set_header(header.iter().copied());
    for row in rows {
        table.add_row(row);
    }
    for (i, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, 2));
        if i >= right_from {
            column.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
    }
    table.trim_fmt()
}

/// Prints the rows (summed over days) and the total.
pub(super) fn print(rows: &BTreeMap<RowKey, u64>) {
    println!("{}", render_counts(rows));
}

fn render_counts(rows: &BTreeMap<RowKey, u64>) -> String {
    let header = ["CLIENT", "PROVIDER", "SERVICE", "KIND", "OUTCOME", "COUNT"];
    let lines = rows.iter().map(|((c, p, s, k, o), n)| {
        [
            c.clone(),
            p.clone(),
            s.clone(),
            k.clone(),
            o.clone(),
            n.to_string(),
        ]
    });
    let total: u64 = rows.values().sum();
    format!("{}\ntotal transactions: {total}", render(&header, lines, 5))
}

/// Sums per-day counters into table rows.
pub(super) fn from_counts<'a>(
    counts: impl IntoIterator<Item = (&'a truc_audit::CountKey, &'a u64)>,
) -> BTreeMap<RowKey, u64> {
    let mut rows = BTreeMap::new();
    for (k, n) in counts {
        *rows
            .entry((
                k.client.clone(),
                k.provider.clone(),
                k.service.clone(),
                k.kind.clone(),
                k.outcome.clone(),
            ))
            .or_default() += n;
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counts_table_keeps_its_layout() {
        let mut rows = BTreeMap::new();
        let key = |c: &str, o: &str| {
            (
                c.to_string(),
                "G22".to_string(),
                "G22/citizen-lookup/v1".to_string(),
                "call".to_string(),
                o.to_string(),
            )
        };
        rows.insert(key("000.00.00.H37", "OK"), 12);
        rows.insert(key("H37", "PERMISSION_DENIED"), 3);
        assert_eq!(
            render_counts(&rows),
            "\
CLIENT         PROVIDER  SERVICE                KIND  OUTCOME            COUNT
000.00.00.H37  G22       G22/citizen-lookup/v1  call  OK                    12
H37            G22       G22/citizen-lookup/v1  call  PERMISSION_DENIED      3
total transactions: 15"
        );
    }

    #[test]
    fn columns_are_as_wide_as_their_text_shows() {
        // 'ệ' is 3 bytes but one column wide.
        let out = render(&["A", "N"], [["ệệ", "1"], ["x", "10"]], 1);
        assert_eq!(out, "A    N\nệệ   1\nx   10");
    }
}
