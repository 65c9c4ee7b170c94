//! The transaction table printed by `truc demo`, `truc report` and
//! `truc audit verify`, so that their counts can be compared line by line.

use std::collections::BTreeMap;

/// One row's key: client, provider, service, kind, outcome.
pub type RowKey = (String, String, String, String, String);

/// Prints the rows (summed over days) and the total.
pub fn print(rows: &BTreeMap<RowKey, u64>) {
    let headers = ["CLIENT", "PROVIDER", "SERVICE", "KIND", "OUTCOME", "COUNT"];
    let mut widths = headers.map(str::len);
    for ((c, p, s, k, o), n) in rows {
        for (w, v) in widths.iter_mut().zip([
            c.len(),
            p.len(),
            s.len(),
            k.len(),
            o.len(),
            n.to_string().len(),
        ]) {
            *w = (*w).max(v);
        }
    }
    let line = |cells: [&str; 6]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i == 5 {
                out.push_str(&format!("{cell:>w$}"));
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{out}");
    };
    line(headers);
    for ((c, p, s, k, o), n) in rows {
        line([c, p, s, k, o, &n.to_string()]);
    }
    let total: u64 = rows.values().sum();
    println!("total transactions: {total}");
}

/// Sums per-day counters into table rows.
pub fn from_counts<'a>(
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
