//! What a run's energy means in CO2 and in money, and the `emissions.csv`
//! row that records it in CodeCarbon's format.
//!
//! # Where the carbon intensities come from
//!
//! * **Countries** — Ember's yearly electricity data together with the
//!   Energy Institute's Statistical Review of World Energy, as processed and
//!   published by Our World in Data ("Carbon intensity of electricity
//!   generation", grapher `carbon-intensity-electricity`), data year 2023 (a
//!   few countries whose 2023 figure was missing there carry their 2022
//!   figure; each row says its year). These are *lifecycle* figures: they
//!   include upstream emissions (mining, methane leaks, building the plants),
//!   in grams of CO2-equivalent per kWh *generated* (imports are not
//!   counted). Values are rounded to whole grams. The rows from Argentina
//!   to Ireland (alphabetically) were checked one by one against OWID's
//!   table page; the others come from the same OWID release as shipped in
//!   CodeCarbon's `global_energy_mix.json` (its 2023 update). The world
//!   average, 481 g/kWh for 2023, is Ember's figure on the same basis (as
//!   Ember published it in July 2024).
//! * **Google Cloud regions** — Google's own published grid carbon intensity
//!   per region (GoogleCloudPlatform/region-carbon-info, `data/yearly/
//!   2024.csv`): the average *operational* (direct) emissions of the local
//!   grid, location-based, gCO2eq/kWh, year 2024. Because it leaves out
//!   upstream emissions, it runs lower than the lifecycle country figures;
//!   do not compare numbers across the two sources.
//! * **AWS and Azure regions** — neither publishes a per-region grid
//!   figure. A region outside North America gets its country's figure (the
//!   rows above). A US or Canadian region gets the figure Google publishes
//!   for its region on the same grid (for instance AWS us-east-1 and Azure
//!   eastus, both in northern Virginia, get GCP us-east4's PJM figure),
//!   because a national average would hide a 10x spread between states and
//!   provinces. Each lookup's `name` states the mapping.
//!
//! The tables are `src/cost/data/country_intensity.csv` and
//! `src/cost/data/cloud_regions.csv`, whose header comments repeat these
//! sources; they are compiled in and parsed on first use.
//!
//! Grid intensity changes year to year and hour to hour; these are annual
//! averages, adequate for a cost report, not for carbon accounting.

mod emissions;
mod intensity;

pub use emissions::{
    CODECARBON_COLUMNS_VERSION, EMISSIONS_COLUMNS, EmissionsRow, append_emissions_csv, csv_field,
    default_os, emissions_csv_header, new_run_id, timestamp_utc,
};
pub use intensity::{
    COUNTRIES_FILE, GCP_YEAR, Intensity, REGIONS_FILE, SOURCE_COUNTRIES, SOURCE_GCP,
    WORLD_G_PER_KWH, WORLD_YEAR, co2_kg, intensity, listing, world,
};

// ---------------------------------------------------------------------------
// Money
// ---------------------------------------------------------------------------

/// What electricity and machine time cost.
#[derive(Clone, Debug, PartialEq)]
pub struct Prices {
    /// Price of one kWh.
    pub per_kwh: f64,
    /// Price of one hour of the machine (a cloud instance's hourly rate);
    /// 0 for a machine already paid for.
    pub per_hour: f64,
    /// ISO 4217 code of both prices.
    pub currency: &'static str,
}

impl Default for Prices {
    /// USD 0.15 per kWh and nothing per hour. 0.15 is a round figure for US
    /// retail electricity: the EIA's Electric Power Monthly puts the 2024
    /// average at about 15-16.5 US cents/kWh for households and about 13
    /// cents across all sectors. Set your own tariff for a real bill.
    fn default() -> Self {
        Prices {
            per_kwh: 0.15,
            per_hour: 0.0,
            currency: "USD",
        }
    }
}

/// `kwh` x per-kWh price + `hours` x per-hour price. Pass the energy after
/// PUE: the facility's overhead is paid for too.
pub fn cost(kwh: f64, hours: f64, prices: &Prices) -> f64 {
    kwh * prices.per_kwh + hours * prices.per_hour
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    #[test]
    fn money() {
        let p = Prices::default();
        assert_eq!((p.per_kwh, p.per_hour, p.currency), (0.15, 0.0, "USD"));
        // 2.5 kWh x 0.15 = 0.375.
        assert!(close(cost(2.5, 3.0, &p), 0.375));
        let cloud = Prices {
            per_kwh: 0.15,
            per_hour: 1.5,
            currency: "USD",
        };
        // 0.375 + 2 h x 1.5 = 3.375.
        assert!(close(cost(2.5, 2.0, &cloud), 3.375));
    }
}
