//! Spend reports: rollup rows grouped by any of day, week, month, model, provider, task class,
//! budget key or a tag, with spend, settled calls, tokens and mean cost per call, rendered as a
//! table, CSV (the month-end showback/chargeback export) or JSON.
//!
//! The grouping runs on integer nano-USD, so every grouping of the same rows sums to the same
//! total, exact to the cent against the ledgers.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{Datelike, NaiveDate};
use serde::Serialize;

use super::rollup::{SpendKey, SpendTotals, DAY_MS};

/// One grouping dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupBy {
    Day,
    /// The Monday (UTC) starting the ISO week.
    Week,
    Month,
    Model,
    Provider,
    TaskClass,
    BudgetKey,
    Tag(String),
}

/// The value a row without the tag, or without a budget, is grouped under.
pub const NONE: &str = "(none)";

impl std::str::FromStr for GroupBy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "day" => GroupBy::Day,
            "week" => GroupBy::Week,
            "month" => GroupBy::Month,
            "model" => GroupBy::Model,
            "provider" => GroupBy::Provider,
            "task_class" => GroupBy::TaskClass,
            "budget_key" => GroupBy::BudgetKey,
            _ => match s.strip_prefix("tag:") {
                Some(t) if !t.is_empty() => GroupBy::Tag(t.to_string()),
                _ => {
                    return Err(format!(
                        "cannot group by {}: use day, week, month, model, provider, task_class, \
                         budget_key or tag:NAME",
                        crate::validation::echo(s)
                    ))
                }
            },
        })
    }
}

impl GroupBy {
    /// The column name.
    pub fn column(&self) -> String {
        match self {
            GroupBy::Day => "day".into(),
            GroupBy::Week => "week".into(),
            GroupBy::Month => "month".into(),
            GroupBy::Model => "model".into(),
            GroupBy::Provider => "provider".into(),
            GroupBy::TaskClass => "task_class".into(),
            GroupBy::BudgetKey => "budget_key".into(),
            GroupBy::Tag(t) => format!("tag:{t}"),
        }
    }

    fn value(&self, k: &SpendKey) -> String {
        let or_none = |s: &str| {
            if s.is_empty() {
                NONE.to_string()
            } else {
                s.to_string()
            }
        };
        match self {
            GroupBy::Day => date(k.day).format("%Y-%m-%d").to_string(),
            GroupBy::Week => {
                let d = date(k.day);
                let monday = d - chrono::Days::new(u64::from(d.weekday().num_days_from_monday()));
                monday.format("%Y-%m-%d").to_string()
            }
            GroupBy::Month => date(k.day).format("%Y-%m").to_string(),
            GroupBy::Model => k.model.clone(),
            GroupBy::Provider => k.provider.clone(),
            GroupBy::TaskClass => k.task_class.clone(),
            GroupBy::BudgetKey => or_none(&k.budget_key),
            GroupBy::Tag(t) => k.tags.get(t).map_or(NONE.to_string(), |v| v.clone()),
        }
    }
}

/// The calendar date of a UTC day number.
fn date(day: u32) -> NaiveDate {
    chrono::DateTime::from_timestamp_millis((u64::from(day) * DAY_MS) as i64)
        .map(|t| t.date_naive())
        .unwrap_or_default()
}

/// The UTC days a `[since_ms, until_ms)` range selects: every day that starts before `until_ms`
/// and ends after `since_ms` (the rollup's unit is a whole day).
pub fn day_range(since_ms: u64, until_ms: u64) -> (u32, u32) {
    let since = super::rollup::day_of(since_ms);
    let until = if until_ms == 0 {
        0
    } else {
        super::rollup::day_of(until_ms - 1).saturating_add(1)
    };
    (since, until)
}

/// One group: its values of the grouping dimensions (in order) and its sums.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpendGroup {
    pub key: Vec<String>,
    #[serde(flatten)]
    pub totals: SpendTotals,
}

/// Groups `rows` by `by` (no dimension: one total), sorted by the group values.
pub fn group<'a>(
    rows: impl IntoIterator<Item = (&'a SpendKey, &'a SpendTotals)>,
    by: &[GroupBy],
) -> Vec<SpendGroup> {
    let mut out: BTreeMap<Vec<String>, SpendTotals> = BTreeMap::new();
    for (k, t) in rows {
        out.entry(by.iter().map(|g| g.value(k)).collect())
            .or_default()
            .add(t);
    }
    out.into_iter()
        .map(|(key, totals)| SpendGroup { key, totals })
        .collect()
}

/// Output format of `report spend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

const FIGURES: [&str; 5] = [
    "spend_usd",
    "requests",
    "input_tokens",
    "output_tokens",
    "mean_cost_usd",
];

fn figures(t: &SpendTotals, decimals: usize) -> [String; 5] {
    [
        format!("{:.decimals$}", t.spend_usd()),
        t.requests.to_string(),
        t.input_tokens.to_string(),
        t.output_tokens.to_string(),
        format!("{:.decimals$}", t.mean_cost_usd()),
    ]
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Renders groups under `columns` (the grouping dimensions' names). The table ends with a total
/// row; CSV and JSON carry the groups only (a spreadsheet sums them).
pub fn render(columns: &[String], groups: &[SpendGroup], format: Format) -> String {
    match format {
        Format::Csv => {
            let mut s = String::new();
            let head: Vec<&str> = columns.iter().map(String::as_str).chain(FIGURES).collect();
            let _ = writeln!(s, "{}", head.join(","));
            for g in groups {
                let cells: Vec<String> = g
                    .key
                    .iter()
                    .map(|v| csv_field(v))
                    .chain(figures(&g.totals, 9))
                    .collect();
                let _ = writeln!(s, "{}", cells.join(","));
            }
            s
        }
        Format::Json => {
            let rows: Vec<serde_json::Value> = groups
                .iter()
                .map(|g| {
                    let mut m = serde_json::Map::new();
                    for (c, v) in columns.iter().zip(&g.key) {
                        m.insert(c.clone(), v.clone().into());
                    }
                    m.insert("spend_usd".into(), g.totals.spend_usd().into());
                    m.insert("spend_nusd".into(), g.totals.spend_nusd.into());
                    m.insert("requests".into(), g.totals.requests.into());
                    m.insert("input_tokens".into(), g.totals.input_tokens.into());
                    m.insert("output_tokens".into(), g.totals.output_tokens.into());
                    m.insert("mean_cost_usd".into(), g.totals.mean_cost_usd().into());
                    serde_json::Value::Object(m)
                })
                .collect();
            format!(
                "{}\n",
                serde_json::to_string_pretty(&rows).unwrap_or_default()
            )
        }
        Format::Table => {
            let mut t = comfy_table::Table::new();
            t.set_header(columns.iter().map(String::as_str).chain(FIGURES));
            let mut total = SpendTotals::default();
            for g in groups {
                total.add(&g.totals);
                t.add_row(g.key.iter().cloned().chain(figures(&g.totals, 4)));
            }
            let label = (0..columns.len()).map(|i| if i == 0 { "TOTAL" } else { "" }.to_string());
            t.add_row(label.chain(figures(&total, 4)));
            format!("{t}\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(day: u32, model: &str, user: Option<&str>) -> SpendKey {
        SpendKey {
            day,
            model: model.into(),
            provider: "p".into(),
            task_class: "qa".into(),
            budget_key: String::new(),
            tags: user
                .map(|u| [("user".to_string(), u.to_string())].into())
                .unwrap_or_default(),
        }
    }

    fn totals(nusd: u64) -> SpendTotals {
        SpendTotals {
            spend_nusd: nusd,
            requests: 1,
            input_tokens: 3,
            output_tokens: 4,
        }
    }

    #[test]
    fn groups_by_calendar_units_and_tags_and_every_grouping_sums_the_same() {
        // 2026-11-29 is day 20_786, a Sunday; 2026-11-30 a Monday, 2026-12-01 a Tuesday.
        let rows = [
            (key(20_786, "a", Some("u1")), totals(1_000_000_000)),
            (key(20_787, "a", None), totals(250_000_000)),
            (key(20_788, "b", Some("u1")), totals(5)),
        ];
        let it = || rows.iter().map(|(k, t)| (k, t));
        let by_week = group(it(), &[GroupBy::Week]);
        assert_eq!(by_week[0].key, vec!["2026-11-23"]);
        assert_eq!(by_week[1].key, vec!["2026-11-30"]);
        let by_month = group(it(), &[GroupBy::Month, GroupBy::Tag("user".into())]);
        let keys: Vec<_> = by_month.iter().map(|g| g.key.join("/")).collect();
        assert_eq!(keys, ["2026-11/(none)", "2026-11/u1", "2026-12/u1"]);
        for by in [
            vec![],
            vec![GroupBy::Day],
            vec![GroupBy::Model, GroupBy::Provider],
        ] {
            let sum: u64 = group(it(), &by).iter().map(|g| g.totals.spend_nusd).sum();
            assert_eq!(sum, 1_250_000_005, "{by:?}");
        }
        assert!("tag:".parse::<GroupBy>().is_err());
        assert!("hour".parse::<GroupBy>().unwrap_err().contains("tag:NAME"));
        assert_eq!(day_range(0, DAY_MS), (0, 1));
        assert_eq!(day_range(DAY_MS + 1, DAY_MS + 2), (1, 2));
    }

    #[test]
    fn renders_csv_json_and_a_table_with_a_total() {
        let rows = [(key(20_786, "a,b", None), totals(1_500_000_000))];
        let g = group(rows.iter().map(|(k, t)| (k, t)), &[GroupBy::Model]);
        let cols = vec!["model".to_string()];
        let csv = render(&cols, &g, Format::Csv);
        assert_eq!(
            csv,
            "model,spend_usd,requests,input_tokens,output_tokens,mean_cost_usd\n\
             \"a,b\",1.500000000,1,3,4,1.500000000\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render(&cols, &g, Format::Json)).unwrap();
        assert_eq!(json[0]["spend_nusd"], 1_500_000_000u64);
        let table = render(&cols, &g, Format::Table);
        assert!(
            table.contains("TOTAL") && table.contains("1.5000"),
            "{table}"
        );
    }
}
