//! Inventory rules, without IO: an order's lines grouped per SKU, and whether stock covers them.

use std::collections::BTreeMap;

use contracts::order::StockLine;

/// Quantities per SKU, summed over duplicate lines, ordered by SKU (the order rows are locked in,
/// so concurrent reservations never deadlock).
pub fn demand(lines: &[StockLine]) -> BTreeMap<String, i64> {
    let mut d = BTreeMap::new();
    for l in lines {
        *d.entry(l.sku.clone()).or_insert(0) += i64::from(l.quantity);
    }
    d
}

/// Stock of one SKU as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    pub on_hand: i64,
    pub reserved: i64,
}

impl Level {
    pub fn available(self) -> i64 {
        self.on_hand - self.reserved
    }
}

/// Why a reservation is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shortage {
    UnknownSku(String),
    OutOfStock { sku: String, wanted: i64, available: i64 },
}

impl Shortage {
    pub fn code(&self) -> &'static str {
        match self {
            Shortage::UnknownSku(_) => "unknown_sku",
            Shortage::OutOfStock { .. } => "out_of_stock",
        }
    }

    pub fn reason(&self) -> String {
        match self {
            Shortage::UnknownSku(sku) => format!("unknown SKU {sku}"),
            Shortage::OutOfStock { sku, wanted, available } => {
                format!("not enough {sku}: {wanted} wanted, {available} available")
            }
        }
    }
}

/// All or nothing: the first line stock cannot cover, or `None` if every line is covered.
pub fn shortage(demand: &BTreeMap<String, i64>, stock: &BTreeMap<String, Level>) -> Option<Shortage> {
    demand.iter().find_map(|(sku, &wanted)| match stock.get(sku) {
        None => Some(Shortage::UnknownSku(sku.clone())),
        Some(level) if level.available() < wanted => {
            Some(Shortage::OutOfStock { sku: sku.clone(), wanted, available: level.available() })
        }
        Some(_) => None,
    })
}

/// The demo catalog seeded into an empty database: `SKU-0001` .. `SKU-0012`, 100,000 units each.
pub fn demo_catalog() -> Vec<(String, i64)> {
    (1..=12).map(|i| (format!("SKU-{i:04}"), 100_000)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sku: &str, q: u32) -> StockLine {
        StockLine { sku: sku.into(), quantity: q }
    }

    #[test]
    fn duplicate_lines_add_up_and_come_out_sorted() {
        let d = demand(&[line("B", 1), line("A", 2), line("B", 3)]);
        assert_eq!(d.into_iter().collect::<Vec<_>>(), vec![("A".into(), 2), ("B".into(), 4)]);
    }

    #[test]
    fn all_or_nothing() {
        let stock: BTreeMap<String, Level> = [
            ("A".to_string(), Level { on_hand: 10, reserved: 8 }),
            ("B".to_string(), Level { on_hand: 5, reserved: 0 }),
        ]
        .into();
        assert_eq!(shortage(&demand(&[line("A", 2), line("B", 5)]), &stock), None);
        assert_eq!(
            shortage(&demand(&[line("A", 3), line("B", 1)]), &stock),
            Some(Shortage::OutOfStock { sku: "A".into(), wanted: 3, available: 2 })
        );
        let s = shortage(&demand(&[line("C", 1)]), &stock).unwrap();
        assert_eq!((s.code(), s.reason()), ("unknown_sku", "unknown SKU C".to_string()));
    }

    #[test]
    fn the_demo_catalog_is_big_enough() {
        let c = demo_catalog();
        assert!(c.len() >= 10 && c.iter().all(|(_, n)| *n >= 10_000));
    }
}
