//! Virtual inventory (DESIGN §7): the warehouses a sale's units ship from
//! and each buyer region's preference order among them.
//!
//! This module owns the spec as the admin gives it and its validation; the
//! scripts own the counters. Invariants of a valid [`Inventory`]: 1 to
//! [`MAX_WAREHOUSES`] warehouses with distinct ids, every warehouse named
//! by a region order or the default order exists, no order names a
//! warehouse twice, and the units sum to at most [`MAX_NUMBER`]. A sale
//! created without warehouses has one, [`DEFAULT_WAREHOUSE`], holding all
//! its stock.
//!
//! Which warehouse a winner gets is decided in `lua/admit.lua`, in the same
//! atomic step that records the win; [`pick`] states the same rule in Rust
//! so it can be read and tested on its own.

use std::collections::BTreeMap;

use crate::id::{RegionId, WarehouseId};
use crate::sale::MAX_NUMBER;

/// The warehouse of a sale created without warehouses.
pub const DEFAULT_WAREHOUSE: &str = "default";
/// Most warehouses one sale may have (DESIGN §7).
pub const MAX_WAREHOUSES: usize = 64;
/// Most buyer regions one sale may name.
pub const MAX_REGIONS: usize = 256;

/// Why a warehouse spec is refused (an admin gets it as a 400 detail).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("warehouses must name 1 to 64 warehouses")]
    WarehouseCount,
    #[error("warehouse id {0:?} is not 1-64 characters of [A-Za-z0-9_-]")]
    BadWarehouse(String),
    #[error("region id {0:?} is not 1-64 characters of [A-Za-z0-9_-]")]
    BadRegion(String),
    #[error("regions may name at most 256 regions")]
    RegionCount,
    #[error("stock is {stock} but the warehouses hold {sum}")]
    StockMismatch { stock: u64, sum: u64 },
    #[error("stock is too large")]
    TooLarge,
    #[error("{0} names unknown warehouse {1:?}")]
    UnknownWarehouse(String, String),
    #[error("{0} names warehouse {1:?} twice")]
    Duplicate(String, String),
    #[error("{0} must not be empty")]
    EmptyOrder(String),
}

/// A sale's warehouses, region orders and default order, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    /// Warehouse and its units, sorted by id.
    pub warehouses: Vec<(WarehouseId, u64)>,
    /// Region and its preference order, sorted by region.
    pub regions: Vec<(RegionId, Vec<WarehouseId>)>,
    /// Order for buyers of no or an unknown region; `None`: most unsold first.
    pub default_order: Option<Vec<WarehouseId>>,
}

/// The warehouse fields of a sale spec, as JSON gives them.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct RawSpec {
    pub warehouses: Option<BTreeMap<String, u64>>,
    pub regions: Option<BTreeMap<String, Vec<String>>>,
    pub default_order: Option<Vec<String>>,
}

impl RawSpec {
    pub fn is_empty(&self) -> bool {
        self.warehouses.is_none() && self.regions.is_none() && self.default_order.is_none()
    }
}

fn default_id() -> WarehouseId {
    // "default" is in the id alphabet; a failure here is a typo caught by tests.
    WarehouseId::parse(DEFAULT_WAREHOUSE).unwrap_or_else(|_| unreachable!())
}

impl Inventory {
    /// One warehouse, `default`, with all the stock.
    pub fn single(stock: u64) -> Self {
        Inventory {
            warehouses: vec![(default_id(), stock)],
            regions: Vec::new(),
            default_order: None,
        }
    }

    pub fn total(&self) -> u64 {
        self.warehouses.iter().map(|(_, n)| n).sum()
    }

    /// Validates `raw` against `stock` (the spec's `stock`, if given) and
    /// returns the stock the sale is created with, if any, and its
    /// inventory. Without warehouses, the stock is in `default`.
    pub fn from_spec(
        stock: Option<u64>,
        raw: &RawSpec,
    ) -> Result<(Option<u64>, Inventory), SpecError> {
        let warehouses = match &raw.warehouses {
            None => vec![(default_id(), stock.unwrap_or(0))],
            Some(map) => {
                if map.is_empty() || map.len() > MAX_WAREHOUSES {
                    return Err(SpecError::WarehouseCount);
                }
                let mut v = Vec::with_capacity(map.len());
                for (w, n) in map {
                    let id =
                        WarehouseId::parse(w).map_err(|_| SpecError::BadWarehouse(w.clone()))?;
                    v.push((id, *n));
                }
                v
            }
        };
        let mut sum: u64 = 0;
        for (_, n) in &warehouses {
            sum = sum.checked_add(*n).ok_or(SpecError::TooLarge)?;
        }
        if sum > MAX_NUMBER {
            return Err(SpecError::TooLarge);
        }
        let stock = match (stock, raw.warehouses.is_some()) {
            (Some(s), true) if s != sum => return Err(SpecError::StockMismatch { stock: s, sum }),
            (_, true) => Some(sum),
            (s, false) => s,
        };
        let known = |what: &str, list: &[String]| -> Result<Vec<WarehouseId>, SpecError> {
            if list.is_empty() {
                return Err(SpecError::EmptyOrder(what.to_string()));
            }
            let mut out: Vec<WarehouseId> = Vec::with_capacity(list.len());
            for w in list {
                let id = WarehouseId::parse(w).map_err(|_| SpecError::BadWarehouse(w.clone()))?;
                if !warehouses.iter().any(|(k, _)| *k == id) {
                    return Err(SpecError::UnknownWarehouse(what.to_string(), w.clone()));
                }
                if out.contains(&id) {
                    return Err(SpecError::Duplicate(what.to_string(), w.clone()));
                }
                out.push(id);
            }
            Ok(out)
        };
        let mut regions = Vec::new();
        if let Some(map) = &raw.regions {
            if map.len() > MAX_REGIONS {
                return Err(SpecError::RegionCount);
            }
            for (r, list) in map {
                let id = RegionId::parse(r).map_err(|_| SpecError::BadRegion(r.clone()))?;
                regions.push((id, known(&format!("region {r}"), list)?));
            }
        }
        let default_order = match &raw.default_order {
            None => None,
            Some(list) => Some(known("default_order", list)?),
        };
        Ok((
            stock,
            Inventory {
                warehouses,
                regions,
                default_order,
            },
        ))
    }

    /// The preference order of a buyer shipping to `region`; empty means
    /// "most unsold first".
    pub fn order_for(&self, region: Option<&RegionId>) -> &[WarehouseId] {
        region
            .and_then(|r| self.regions.iter().find(|(k, _)| k == r))
            .map(|(_, o)| o.as_slice())
            .or(self.default_order.as_deref())
            .unwrap_or(&[])
    }
}

/// The warehouse a winner gets (the rule of `admit.lua`): the first in
/// `order` with an unsold unit, else any with one (the one with the most
/// unsold units, first by id on a tie). `unsold` lists every warehouse.
/// Returns the warehouse and whether it was not the buyer's first choice
/// (cross-shipping); `None` when nothing is unsold.
pub fn pick(order: &[WarehouseId], unsold: &[(WarehouseId, u64)]) -> Option<(WarehouseId, bool)> {
    let left = |w: &WarehouseId| unsold.iter().find(|(k, _)| k == w).map_or(0, |(_, n)| *n);
    if let Some(w) = order.iter().find(|w| left(w) > 0) {
        return Some((*w, Some(w) != order.first()));
    }
    let mut best: Option<(WarehouseId, u64)> = None;
    for (w, n) in unsold {
        if *n > 0 && best.is_none_or(|(_, b)| *n > b) {
            best = Some((*w, *n));
        }
    }
    best.map(|(w, _)| (w, !order.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> WarehouseId {
        WarehouseId::parse(s).unwrap()
    }

    fn raw(json: &str) -> RawSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_sale_without_warehouses_has_one_named_default() {
        let (stock, inv) = Inventory::from_spec(Some(7), &RawSpec::default()).unwrap();
        assert_eq!(stock, Some(7));
        assert_eq!(inv, Inventory::single(7));
        assert_eq!(inv.warehouses[0].0.as_str(), "default");
    }

    #[test]
    fn the_stock_is_the_sum_of_the_warehouses() {
        let r = raw(r#"{"warehouses":{"a":3,"b":4}}"#);
        assert_eq!(Inventory::from_spec(None, &r).unwrap().0, Some(7));
        assert_eq!(Inventory::from_spec(Some(7), &r).unwrap().0, Some(7));
        assert_eq!(
            Inventory::from_spec(Some(8), &r),
            Err(SpecError::StockMismatch { stock: 8, sum: 7 })
        );
    }

    #[test]
    fn orders_may_only_name_known_warehouses_once() {
        let bad = [
            r#"{"warehouses":{"a":1},"regions":{"eu":["b"]}}"#,
            r#"{"warehouses":{"a":1},"default_order":["a","a"]}"#,
            r#"{"warehouses":{"a":1},"regions":{"eu":[]}}"#,
            r#"{"warehouses":{}}"#,
            r#"{"warehouses":{"a b":1}}"#,
            r#"{"warehouses":{"a":1},"regions":{"e.u":["a"]}}"#,
            r#"{"regions":{"eu":["a"]}}"#,
        ];
        for b in bad {
            assert!(Inventory::from_spec(None, &raw(b)).is_err(), "{b}");
        }
        let ok = raw(r#"{"regions":{"eu":["default"]}}"#);
        assert!(Inventory::from_spec(Some(1), &ok).is_ok());
    }

    #[test]
    fn too_many_warehouses_or_units_are_refused() {
        let many: BTreeMap<String, u64> = (0..65).map(|i| (format!("w{i}"), 1)).collect();
        let r = RawSpec {
            warehouses: Some(many),
            ..RawSpec::default()
        };
        assert_eq!(
            Inventory::from_spec(None, &r),
            Err(SpecError::WarehouseCount)
        );
        let r = raw(r#"{"warehouses":{"a":9007199254740991,"b":1}}"#);
        assert_eq!(Inventory::from_spec(None, &r), Err(SpecError::TooLarge));
    }

    #[test]
    fn a_buyer_gets_the_first_warehouse_of_their_region_with_units_left() {
        let (_, inv) = Inventory::from_spec(
            None,
            &raw(r#"{"warehouses":{"a":1,"b":1,"c":1},"regions":{"eu":["b","a"]},"default_order":["c"]}"#),
        )
        .unwrap();
        let eu = RegionId::parse("eu").unwrap();
        let us = RegionId::parse("us").unwrap();
        assert_eq!(inv.order_for(Some(&eu)), &[w("b"), w("a")]);
        assert_eq!(inv.order_for(Some(&us)), &[w("c")]);
        assert_eq!(inv.order_for(None), &[w("c")]);
        let unsold = [(w("a"), 2), (w("b"), 0), (w("c"), 5)];
        assert_eq!(
            pick(inv.order_for(Some(&eu)), &unsold),
            Some((w("a"), true))
        );
        let unsold = [(w("a"), 2), (w("b"), 1), (w("c"), 5)];
        assert_eq!(
            pick(inv.order_for(Some(&eu)), &unsold),
            Some((w("b"), false))
        );
    }

    #[test]
    fn without_an_order_the_warehouse_with_most_unsold_serves() {
        let unsold = [(w("a"), 2), (w("b"), 9), (w("c"), 9)];
        assert_eq!(pick(&[], &unsold), Some((w("b"), false)));
        // An order whose warehouses are all empty falls back to any other.
        assert_eq!(pick(&[w("x")], &unsold), Some((w("b"), true)));
        assert_eq!(pick(&[], &[(w("a"), 0)]), None);
    }
}
