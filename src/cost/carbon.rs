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

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::LazyLock;

use serde::Deserialize;

use super::data;

/// The intensity of the electricity a run used.
#[derive(Clone, Debug, PartialEq)]
pub struct Intensity {
    /// Grams of CO2-equivalent per kWh.
    pub g_per_kwh: f64,
    /// What was looked up, and what it was mapped to, e.g. "France" or
    /// "AWS us-east-1 (N. Virginia) -> PJM grid, as GCP us-east4".
    pub name: String,
    /// The canonical code: ISO alpha-3 for a country ("FRA"), "WLD" for the
    /// world, the region's own code for a cloud region ("us-east-1").
    pub code: String,
    /// Where the figure comes from.
    pub source: &'static str,
    /// The year the figure describes.
    pub year: u16,
    /// The country, as CodeCarbon's `country_name` column wants it.
    pub country_name: &'static str,
    /// ISO 3166-1 alpha-3 of the country (CodeCarbon's `country_iso_code`).
    pub country_iso3: &'static str,
    /// "aws", "gcp" or "azure" for a cloud region, "" otherwise.
    pub cloud_provider: &'static str,
}

/// The source of the country rows and of the world average.
pub const SOURCE_COUNTRIES: &str = "Ember and Energy Institute via Our World in Data, \
     carbon intensity of electricity generation (lifecycle gCO2e/kWh)";
/// The source of the Google Cloud region rows.
pub const SOURCE_GCP: &str = "Google Cloud region-carbon-info, yearly grid carbon intensity \
     (location-based, operational gCO2eq/kWh)";
/// The year of Google's per-region figures used here.
pub const GCP_YEAR: u16 = 2024;

/// The world average used when no country or region is given.
pub const WORLD_G_PER_KWH: f64 = 481.0;
/// The year of [`WORLD_G_PER_KWH`].
pub const WORLD_YEAR: u16 = 2023;

/// Where the country table lives in the source tree, for messages.
pub const COUNTRIES_FILE: &str = "src/cost/data/country_intensity.csv";
/// Where the cloud region table lives in the source tree, for messages.
pub const REGIONS_FILE: &str = "src/cost/data/cloud_regions.csv";

/// A row of `country_intensity.csv`: all G20 countries, the Nordics, the
/// EU's larger members and the other countries where clouds have regions.
#[derive(Clone, Debug, PartialEq, Deserialize)]
struct CountryRow {
    alpha2: String,
    alpha3: String,
    name: String,
    g_per_kwh: f64,
    year: u16,
}

/// What a row of `cloud_regions.csv` rests on (its `basis` column).
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Basis {
    Published,
    SameGrid,
    Country,
}

/// A row of `cloud_regions.csv`, as written.
#[derive(Clone, Debug, PartialEq, Deserialize)]
struct RegionRow {
    provider: String,
    code: String,
    place: String,
    basis: Basis,
    #[serde(rename = "ref")]
    reference: String,
    grid: String,
    g_per_kwh: Option<f64>,
}

/// Where a cloud region's figure comes from.
#[derive(Clone, Debug, PartialEq)]
enum Grid {
    /// Google's published figure for this GCP region ([`GCP_YEAR`]), in
    /// the country with this alpha-3.
    Published(String, f64),
    /// The figure Google publishes for the GCP region (first) on the same
    /// grid (second, its name).
    SameGridAs(String, String),
    /// The national figure of the country with this alpha-3.
    Country(String),
}

/// A cloud region of the table.
#[derive(Clone, Debug, PartialEq)]
struct Region {
    code: String,
    provider: String,
    place: String,
    grid: Grid,
}

fn is_upper_code(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_uppercase())
}

fn parse_countries(text: &str) -> Result<Vec<CountryRow>, String> {
    let rows = data::parse_csv(COUNTRIES_FILE, text, |c: &CountryRow| {
        if !is_upper_code(&c.alpha2, 2) || !is_upper_code(&c.alpha3, 3) {
            return Err(format!(
                "{:?}/{:?} are not ISO alpha-2/alpha-3 codes",
                c.alpha2, c.alpha3
            ));
        }
        data::non_empty("name", &c.name)?;
        data::positive("g_per_kwh", c.g_per_kwh)?;
        if !(1990..=2100).contains(&c.year) {
            return Err(format!("year {} is implausible", c.year));
        }
        Ok(())
    })?;
    data::unique(COUNTRIES_FILE, &rows, |c| c.alpha2.clone())?;
    data::unique(COUNTRIES_FILE, &rows, |c| c.alpha3.clone())?;
    data::unique(COUNTRIES_FILE, &rows, |c| c.name.to_lowercase())?;
    Ok(rows)
}

/// Parses `cloud_regions.csv`; every country it names must be in
/// `countries`, every GCP region it refers to must be a published row.
fn parse_regions(text: &str, countries: &[CountryRow]) -> Result<Vec<Region>, String> {
    let has_country = |iso3: &str| countries.iter().any(|c| c.alpha3 == iso3);
    let rows = data::parse_csv(REGIONS_FILE, text, |r: &RegionRow| {
        if !["aws", "gcp", "azure"].contains(&r.provider.as_str()) {
            return Err(format!(
                "provider {:?} is not aws, gcp or azure",
                r.provider
            ));
        }
        data::non_empty("code", &r.code)?;
        data::non_empty("place", &r.place)?;
        match (r.basis, r.g_per_kwh) {
            (Basis::Published, Some(g)) => {
                if r.provider != "gcp" {
                    return Err("only GCP rows carry a published figure".to_string());
                }
                data::positive("g_per_kwh", g)?;
            }
            (Basis::Published, None) => return Err("a published row needs g_per_kwh".into()),
            (_, Some(_)) => {
                return Err("only a published row carries g_per_kwh".to_string());
            }
            (Basis::SameGrid, None) => data::non_empty("grid", &r.grid)?,
            (Basis::Country, None) => {}
        }
        if r.basis != Basis::SameGrid && !has_country(&r.reference) {
            return Err(format!(
                "ref {:?} is not an alpha-3 code of {COUNTRIES_FILE}",
                r.reference
            ));
        }
        Ok(())
    })?;
    data::unique(REGIONS_FILE, &rows, |r| r.code.to_lowercase())?;
    rows.iter()
        .map(|r| {
            let grid = match r.basis {
                Basis::Published => {
                    Grid::Published(r.reference.clone(), r.g_per_kwh.unwrap_or(0.0))
                }
                Basis::Country => Grid::Country(r.reference.clone()),
                Basis::SameGrid => {
                    let published = rows
                        .iter()
                        .any(|p| p.basis == Basis::Published && p.code == r.reference);
                    if !published {
                        return Err(format!(
                            "{REGIONS_FILE}: {} refers to {:?}, which is not a published GCP row",
                            r.code, r.reference
                        ));
                    }
                    Grid::SameGridAs(r.reference.clone(), r.grid.clone())
                }
            };
            Ok(Region {
                code: r.code.clone(),
                provider: r.provider.clone(),
                place: r.place.clone(),
                grid,
            })
        })
        .collect()
}

/// The shipped country table, parsed on first use (the tests check that it
/// parses).
static COUNTRIES: LazyLock<Vec<CountryRow>> = LazyLock::new(|| {
    parse_countries(data::COUNTRY_INTENSITY_CSV).unwrap_or_else(|e| panic!("{e}"))
});

/// The shipped cloud region table, parsed on first use.
static REGIONS: LazyLock<Vec<Region>> = LazyLock::new(|| {
    parse_regions(data::CLOUD_REGIONS_CSV, &COUNTRIES).unwrap_or_else(|e| panic!("{e}"))
});

fn country_by_iso3(iso3: &str) -> Option<&'static CountryRow> {
    COUNTRIES.iter().find(|c| c.alpha3 == iso3)
}

fn country_intensity(c: &'static CountryRow) -> Intensity {
    Intensity {
        g_per_kwh: c.g_per_kwh,
        name: c.name.clone(),
        code: c.alpha3.clone(),
        source: SOURCE_COUNTRIES,
        year: c.year,
        country_name: &c.name,
        country_iso3: &c.alpha3,
        cloud_provider: "",
    }
}

/// The world average, used when nothing is given.
pub fn world() -> Intensity {
    Intensity {
        g_per_kwh: WORLD_G_PER_KWH,
        name: "World average".to_string(),
        code: "WLD".to_string(),
        source: SOURCE_COUNTRIES,
        year: WORLD_YEAR,
        country_name: "World",
        country_iso3: "WLD",
        cloud_provider: "",
    }
}

fn provider_label(provider: &str) -> &'static str {
    match provider {
        "aws" => "AWS",
        "gcp" => "GCP",
        _ => "Azure",
    }
}

/// Google's published (alpha-3, g/kWh) for a GCP region code.
fn gcp_figure(code: &str) -> Option<(&'static str, f64)> {
    REGIONS.iter().find_map(|r| match &r.grid {
        Grid::Published(iso3, g) if r.code == code => Some((iso3.as_str(), *g)),
        _ => None,
    })
}

fn region_intensity(r: &'static Region) -> Intensity {
    let label = format!("{} {} ({})", provider_label(&r.provider), r.code, r.place);
    let (iso3, g_per_kwh, name, source, year) = match &r.grid {
        Grid::Published(iso3, g) => (iso3.as_str(), *g, label, SOURCE_GCP, GCP_YEAR),
        Grid::SameGridAs(gcp_region, grid_name) => {
            let (iso3, g) = gcp_figure(gcp_region).unwrap_or(("", f64::NAN));
            let name = format!("{label} -> {grid_name} grid, as GCP {gcp_region}");
            (iso3, g, name, SOURCE_GCP, GCP_YEAR)
        }
        Grid::Country(iso3) => {
            let (g, year, country) = country_by_iso3(iso3).map_or((f64::NAN, 0, ""), |c| {
                (c.g_per_kwh, c.year, c.name.as_str())
            });
            let name = format!("{label} -> {country} national grid");
            (iso3.as_str(), g, name, SOURCE_COUNTRIES, year)
        }
    };
    Intensity {
        g_per_kwh,
        name,
        code: r.code.clone(),
        source,
        year,
        country_name: country_by_iso3(iso3).map_or("", |c| c.name.as_str()),
        country_iso3: iso3,
        cloud_provider: &r.provider,
    }
}

/// "aws:eu-west-1", "AWS/eu-west-1" and "eu-west-1" all name the same region.
fn strip_provider(code: &str) -> &str {
    for prefix in ["aws", "gcp", "azure"] {
        if code.len() > prefix.len() + 1
            && code[..prefix.len()].eq_ignore_ascii_case(prefix)
            && matches!(code.as_bytes()[prefix.len()], b':' | b'/')
        {
            return &code[prefix.len() + 1..];
        }
    }
    code
}

fn find_region(code: &str) -> Option<&'static Region> {
    let code = strip_provider(code.trim());
    REGIONS.iter().find(|r| r.code.eq_ignore_ascii_case(code))
}

fn find_country(code: &str) -> Option<&'static CountryRow> {
    let code = code.trim();
    let code = if code.eq_ignore_ascii_case("uk") {
        "GB"
    } else {
        code
    };
    COUNTRIES.iter().find(|c| {
        c.alpha2.eq_ignore_ascii_case(code)
            || c.alpha3.eq_ignore_ascii_case(code)
            || c.name.eq_ignore_ascii_case(code)
    })
}

fn is_world(code: &str) -> bool {
    ["world", "wld", "ww"]
        .iter()
        .any(|w| w.eq_ignore_ascii_case(code.trim()))
}

/// The intensity for a cloud `region` (AWS, GCP or Azure code, optionally
/// prefixed "aws:" / "gcp:" / "azure:") or else a `country` (ISO 3166-1
/// alpha-2 or alpha-3, or the English name, any case; "UK" and "WORLD"
/// accepted); the region wins when both are given, and the world average
/// applies when neither is. An unknown code is an error that names it and
/// shows valid ones.
pub fn intensity(country: Option<&str>, region: Option<&str>) -> Result<Intensity, String> {
    if let Some(region) = region.filter(|r| !r.trim().is_empty()) {
        return find_region(region)
            .map(region_intensity)
            .ok_or_else(|| unknown_region(region));
    }
    match country.filter(|c| !c.trim().is_empty()) {
        None => Ok(world()),
        Some(code) if is_world(code) => Ok(world()),
        Some(code) => find_country(code)
            .map(country_intensity)
            .ok_or_else(|| unknown_country(code)),
    }
}

fn unknown_country(code: &str) -> String {
    let all: Vec<&str> = COUNTRIES.iter().map(|c| c.alpha2.as_str()).collect();
    format!(
        "unknown country code {code:?}: give an ISO 3166-1 alpha-2 or alpha-3 code or an English \
         name, e.g. US/USA, DE/DEU, FR/FRA, GB/GBR, IN/IND, SE/SWE, or WORLD; the {} known \
         countries are {}",
        all.len(),
        all.join(" ")
    )
}

fn unknown_region(code: &str) -> String {
    let sample = |provider: &str| {
        REGIONS
            .iter()
            .filter(|r| r.provider == provider)
            .take(4)
            .map(|r| r.code.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "unknown cloud region {code:?}: known are {} regions, e.g. AWS {}; GCP {}; Azure {} \
         (the full list is carbon::listing(); for a region not listed, give its country instead)",
        REGIONS.len(),
        sample("aws"),
        sample("gcp"),
        sample("azure")
    )
}

/// Every known code with its intensity, one per line, for `--help`-style
/// listings.
pub fn listing() -> String {
    let mut out = String::from("code(s)\tgCO2e/kWh\tyear\tname\n");
    let w = world();
    out += &format!("WORLD/WLD\t{}\t{}\t{}\n", w.g_per_kwh, w.year, w.name);
    for c in COUNTRIES.iter() {
        out += &format!(
            "{}/{}\t{}\t{}\t{}\n",
            c.alpha2, c.alpha3, c.g_per_kwh, c.year, c.name
        );
    }
    for r in REGIONS.iter() {
        let i = region_intensity(r);
        out += &format!("{}\t{}\t{}\t{}\n", i.code, i.g_per_kwh, i.year, i.name);
    }
    out
}

/// Kilograms of CO2e for `kwh` at intensity `i` (kWh x g/kWh / 1000).
pub fn co2_kg(kwh: f64, i: &Intensity) -> f64 {
    kwh * i.g_per_kwh / 1000.0
}

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

// ---------------------------------------------------------------------------
// emissions.csv in CodeCarbon's format
// ---------------------------------------------------------------------------

/// The CodeCarbon release whose `emissions.csv` columns are reproduced.
pub const CODECARBON_COLUMNS_VERSION: &str = "3.3.0";

/// The columns of CodeCarbon's `emissions.csv`, in order: the fields of its
/// `EmissionsData` dataclass (`codecarbon/output_methods/emissions_data.py`,
/// release 3.3.0), which its file output writes as the header.
pub const EMISSIONS_COLUMNS: [&str; 38] = [
    "timestamp",
    "project_name",
    "run_id",
    "experiment_id",
    "duration",
    "emissions",
    "emissions_rate",
    "cpu_power",
    "gpu_power",
    "ram_power",
    "cpu_energy",
    "gpu_energy",
    "ram_energy",
    "energy_consumed",
    "water_consumed",
    "country_name",
    "country_iso_code",
    "region",
    "cloud_provider",
    "cloud_region",
    "os",
    "python_version",
    "codecarbon_version",
    "cpu_count",
    "cpu_model",
    "gpu_count",
    "gpu_model",
    "longitude",
    "latitude",
    "ram_total_size",
    "tracking_mode",
    "cpu_utilization_percent",
    "gpu_utilization_percent",
    "ram_utilization_percent",
    "ram_used_gb",
    "on_cloud",
    "pue",
    "wue",
];

const HEADER: &str = "timestamp,project_name,run_id,experiment_id,duration,emissions,\
emissions_rate,cpu_power,gpu_power,ram_power,cpu_energy,gpu_energy,ram_energy,energy_consumed,\
water_consumed,country_name,country_iso_code,region,cloud_provider,cloud_region,os,\
python_version,codecarbon_version,cpu_count,cpu_model,gpu_count,gpu_model,longitude,latitude,\
ram_total_size,tracking_mode,cpu_utilization_percent,gpu_utilization_percent,\
ram_utilization_percent,ram_used_gb,on_cloud,pue,wue";

/// The header line of `emissions.csv` (no newline): [`EMISSIONS_COLUMNS`]
/// joined with commas.
pub fn emissions_csv_header() -> &'static str {
    HEADER
}

/// One run as a row of CodeCarbon's `emissions.csv`. Units are CodeCarbon's:
/// seconds, kg CO2e, kWh, W, GB (GiB, as CodeCarbon divides by 1024^3),
/// litres. As in CodeCarbon, the energies include PUE and the powers do not.
#[derive(Clone, Debug, PartialEq)]
pub struct EmissionsRow {
    /// `%Y-%m-%dT%H:%M:%S`, no zone; [`Default`] uses the current UTC time.
    pub timestamp: String,
    pub project_name: String,
    pub run_id: String,
    /// Empty unless the caller groups runs into an experiment.
    pub experiment_id: String,
    /// Seconds.
    pub duration: f64,
    /// kg CO2e.
    pub emissions: f64,
    /// kg CO2e per second.
    pub emissions_rate: f64,
    /// Mean W, before PUE.
    pub cpu_power: f64,
    pub gpu_power: f64,
    pub ram_power: f64,
    /// kWh, after PUE.
    pub cpu_energy: f64,
    pub gpu_energy: f64,
    pub ram_energy: f64,
    /// kWh: cpu + gpu + ram energy, after PUE.
    pub energy_consumed: f64,
    /// Litres (energy x WUE); 0 with the default WUE of 0.
    pub water_consumed: f64,
    pub country_name: String,
    /// ISO 3166-1 alpha-3.
    pub country_iso_code: String,
    /// Sub-national region (state, province) when known, else empty.
    pub region: String,
    /// "aws", "gcp", "azure" or empty.
    pub cloud_provider: String,
    pub cloud_region: String,
    pub os: String,
    /// Empty: there is no Python here.
    pub python_version: String,
    /// Empty: CodeCarbon did not write this row.
    pub codecarbon_version: String,
    pub cpu_count: usize,
    pub cpu_model: String,
    pub gpu_count: usize,
    /// CodeCarbon writes "N x NAME", e.g. "1 x NVIDIA H100 80GB HBM3".
    pub gpu_model: String,
    /// Unknown here, written empty (as pandas writes CodeCarbon's None).
    pub longitude: Option<f64>,
    pub latitude: Option<f64>,
    /// GB of RAM of the machine.
    pub ram_total_size: f64,
    /// "process" (this meter) or "machine".
    pub tracking_mode: String,
    pub cpu_utilization_percent: f64,
    pub gpu_utilization_percent: f64,
    pub ram_utilization_percent: f64,
    pub ram_used_gb: f64,
    /// "Y" on a cloud, else "N".
    pub on_cloud: String,
    pub pue: f64,
    /// Water usage effectiveness, L/kWh.
    pub wue: f64,
}

impl Default for EmissionsRow {
    /// Project "headstart", a fresh random run id, the current UTC time,
    /// this OS, tracking mode "process", not on a cloud, PUE 1, everything
    /// measurable 0 and the unknowable empty.
    fn default() -> Self {
        EmissionsRow {
            timestamp: timestamp_utc(std::time::SystemTime::now()),
            project_name: "headstart".to_string(),
            run_id: new_run_id(),
            experiment_id: String::new(),
            duration: 0.0,
            emissions: 0.0,
            emissions_rate: 0.0,
            cpu_power: 0.0,
            gpu_power: 0.0,
            ram_power: 0.0,
            cpu_energy: 0.0,
            gpu_energy: 0.0,
            ram_energy: 0.0,
            energy_consumed: 0.0,
            water_consumed: 0.0,
            country_name: String::new(),
            country_iso_code: String::new(),
            region: String::new(),
            cloud_provider: String::new(),
            cloud_region: String::new(),
            os: default_os(),
            python_version: String::new(),
            codecarbon_version: String::new(),
            cpu_count: 0,
            cpu_model: String::new(),
            gpu_count: 0,
            gpu_model: String::new(),
            longitude: None,
            latitude: None,
            ram_total_size: 0.0,
            tracking_mode: "process".to_string(),
            cpu_utilization_percent: 0.0,
            gpu_utilization_percent: 0.0,
            ram_utilization_percent: 0.0,
            ram_used_gb: 0.0,
            on_cloud: "N".to_string(),
            pue: 1.0,
            wue: 0.0,
        }
    }
}

impl EmissionsRow {
    /// Fills the location columns (country, cloud provider and region,
    /// on_cloud) from an intensity lookup.
    pub fn set_location(&mut self, i: &Intensity) {
        self.country_name = i.country_name.to_string();
        self.country_iso_code = i.country_iso3.to_string();
        self.cloud_provider = i.cloud_provider.to_string();
        let on_cloud = !i.cloud_provider.is_empty();
        self.cloud_region = if on_cloud {
            i.code.clone()
        } else {
            String::new()
        };
        self.on_cloud = if on_cloud { "Y" } else { "N" }.to_string();
    }

    /// Sets `emissions` from `energy_consumed` at intensity `i`, and
    /// `emissions_rate` from it and `duration`.
    pub fn set_emissions(&mut self, i: &Intensity) {
        self.emissions = co2_kg(self.energy_consumed, i);
        self.emissions_rate = if self.duration > 0.0 {
            self.emissions / self.duration
        } else {
            0.0
        };
    }

    /// The row as one CSV line (no newline), fields in
    /// [`EMISSIONS_COLUMNS`] order, quoted where they hold a comma, a quote
    /// or a line break.
    pub fn to_csv_line(&self) -> String {
        let num = |x: f64| {
            if x.is_finite() {
                x.to_string()
            } else {
                String::new()
            }
        };
        let opt = |x: Option<f64>| x.map_or(String::new(), num);
        let fields: [String; 38] = [
            self.timestamp.clone(),
            self.project_name.clone(),
            self.run_id.clone(),
            self.experiment_id.clone(),
            num(self.duration),
            num(self.emissions),
            num(self.emissions_rate),
            num(self.cpu_power),
            num(self.gpu_power),
            num(self.ram_power),
            num(self.cpu_energy),
            num(self.gpu_energy),
            num(self.ram_energy),
            num(self.energy_consumed),
            num(self.water_consumed),
            self.country_name.clone(),
            self.country_iso_code.clone(),
            self.region.clone(),
            self.cloud_provider.clone(),
            self.cloud_region.clone(),
            self.os.clone(),
            self.python_version.clone(),
            self.codecarbon_version.clone(),
            self.cpu_count.to_string(),
            self.cpu_model.clone(),
            self.gpu_count.to_string(),
            self.gpu_model.clone(),
            opt(self.longitude),
            opt(self.latitude),
            num(self.ram_total_size),
            self.tracking_mode.clone(),
            num(self.cpu_utilization_percent),
            num(self.gpu_utilization_percent),
            num(self.ram_utilization_percent),
            num(self.ram_used_gb),
            self.on_cloud.clone(),
            num(self.pue),
            num(self.wue),
        ];
        fields
            .iter()
            .map(|f| csv_field(f))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A CSV field, quoted (RFC 4180, as Python's csv module does by default)
/// when it holds a comma, a double quote or a line break.
pub fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// Appends `row` to the CSV file at `path`, writing the header first when
/// the file does not exist or is empty. An existing file whose first line
/// is not exactly [`emissions_csv_header`] (another CodeCarbon version, or
/// not an emissions file) is left untouched and an `InvalidData` error says
/// where it differs.
pub fn append_emissions_csv(path: &Path, row: &EmissionsRow) -> io::Result<()> {
    let has_content = match fs::metadata(path) {
        Ok(meta) => meta.len() > 0,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(e),
    };
    let mut text = String::new();
    if has_content {
        let mut first = String::new();
        BufReader::new(File::open(path)?).read_line(&mut first)?;
        let first = first.trim_end_matches(['\n', '\r']);
        if first != HEADER {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                header_mismatch(path, first),
            ));
        }
        let mut file = File::open(path)?;
        file.seek(SeekFrom::End(-1))?;
        let mut last = [0u8; 1];
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            text.push('\n');
        }
    } else {
        text.push_str(HEADER);
        text.push('\n');
    }
    text.push_str(&row.to_csv_line());
    text.push('\n');
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(text.as_bytes())
}

fn header_mismatch(path: &Path, found: &str) -> String {
    let found_cols: Vec<&str> = found.split(',').collect();
    let at = EMISSIONS_COLUMNS
        .iter()
        .zip(&found_cols)
        .position(|(want, got)| want != got)
        .unwrap_or(EMISSIONS_COLUMNS.len().min(found_cols.len()));
    let want = EMISSIONS_COLUMNS
        .get(at)
        .copied()
        .unwrap_or("(end of line)");
    let got = found_cols.get(at).copied().unwrap_or("(end of line)");
    format!(
        "{} does not start with CodeCarbon {CODECARBON_COLUMNS_VERSION}'s emissions.csv header: \
         column {} is {got:?} where {want:?} is expected ({} columns found, {} expected); not \
         appending to it, so as not to mix formats: move it aside or write to another file",
        path.display(),
        at + 1,
        found_cols.len(),
        EMISSIONS_COLUMNS.len()
    )
}

/// `%Y-%m-%dT%H:%M:%S` in UTC (CodeCarbon writes local time in the same
/// format, without a zone).
pub fn timestamp_utc(at: std::time::SystemTime) -> String {
    let secs = match at.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
    };
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (proleptic Gregorian), by
    // 400-year eras of 146 097 days starting on 0000-03-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A random version-4 UUID for `run_id`, from std's randomly keyed hasher.
pub fn new_run_id() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let word = |salt: u64| {
        let mut h = RandomState::new().build_hasher();
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.write_u64(salt);
        h.finish()
    };
    let (hi, lo) = (word(1), word(2));
    let hi = (hi & !0xF000) | 0x4000; // version 4
    let lo = (lo & !(0b11 << 62)) | (0b10 << 62); // RFC 4122 variant
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xFFFF,
        hi & 0xFFFF,
        lo >> 48,
        lo & 0xFFFF_FFFF_FFFF
    )
}

/// The OS for the `os` column, shaped like Python's `platform.platform()`
/// as far as std can tell: "Linux-6.8.0-1015-gcp-x86_64".
pub fn default_os() -> String {
    let arch = std::env::consts::ARCH;
    match fs::read_to_string("/proc/sys/kernel/osrelease") {
        Ok(release) if !release.trim().is_empty() => {
            format!("Linux-{}-{arch}", release.trim())
        }
        _ => format!("{}-{arch}", std::env::consts::OS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    /// Splits one CSV line (RFC 4180 quoting) into fields.
    fn split_csv(line: &str) -> Vec<String> {
        let mut fields = vec![String::new()];
        let mut quoted = false;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, quoted) {
                ('"', true) if chars.peek() == Some(&'"') => {
                    chars.next();
                    fields.last_mut().unwrap().push('"');
                }
                ('"', _) => quoted = !quoted,
                (',', false) => fields.push(String::new()),
                (c, _) => fields.last_mut().unwrap().push(c),
            }
        }
        fields
    }

    fn temp_file(tag: &str) -> std::path::PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        std::env::temp_dir().join(format!(
            "headstart-carbon-{tag}-{}-{nanos}.csv",
            std::process::id()
        ))
    }

    #[test]
    fn co2_for_two_and_a_half_kwh_in_france_and_germany() {
        let fr = intensity(Some("FR"), None).unwrap();
        assert_eq!(fr.g_per_kwh, 56.0);
        assert_eq!((fr.code.as_str(), fr.year), ("FRA", 2023));
        // 2.5 kWh x 56 g/kWh = 140 g.
        assert!(close(co2_kg(2.5, &fr), 0.14));
        let de = intensity(Some("deu"), None).unwrap();
        // 2.5 x 381 = 952.5 g.
        assert!(close(co2_kg(2.5, &de), 0.9525));
        assert_eq!(de.name, "Germany");
        assert_eq!(de.source, SOURCE_COUNTRIES);
    }

    #[test]
    fn codes_are_case_insensitive_alpha2_alpha3_or_name() {
        for code in ["SE", "se", "SWE", "swe", "Sweden", " sweden "] {
            let i = intensity(Some(code), None).unwrap();
            assert_eq!((i.code.as_str(), i.g_per_kwh), ("SWE", 41.0), "{code}");
        }
        assert_eq!(intensity(Some("UK"), None).unwrap().code, "GBR");
    }

    #[test]
    fn world_is_the_default() {
        for (country, region) in [(None, None), (Some("WORLD"), None), (Some(""), Some(" "))] {
            let w = intensity(country, region).unwrap();
            assert_eq!(w.g_per_kwh, 481.0);
            assert_eq!(w.code, "WLD");
        }
        // 2.5 kWh x 481 g/kWh = 1.2025 kg.
        assert!(close(co2_kg(2.5, &world()), 1.2025));
    }

    #[test]
    fn regions_win_and_say_how_they_were_mapped() {
        // GCP publishes its own figure.
        let fi = intensity(Some("DE"), Some("europe-north1")).unwrap();
        assert_eq!(fi.g_per_kwh, 39.32);
        assert_eq!((fi.source, fi.year), (SOURCE_GCP, 2024));
        assert_eq!(fi.name, "GCP europe-north1 (Finland)");
        assert_eq!(fi.cloud_provider, "gcp");
        // AWS in Europe: the country's grid.
        let se = intensity(None, Some("eu-north-1")).unwrap();
        assert_eq!(se.g_per_kwh, 41.0);
        assert_eq!(
            se.name,
            "AWS eu-north-1 (Stockholm) -> Sweden national grid"
        );
        assert_eq!((se.country_iso3, se.year), ("SWE", 2023));
        // AWS and Azure in the US: Google's figure for the same grid.
        let va = intensity(None, Some("aws:US-EAST-1")).unwrap();
        assert_eq!(va.g_per_kwh, 323.05);
        assert_eq!(
            va.name,
            "AWS us-east-1 (N. Virginia) -> PJM grid, as GCP us-east4"
        );
        assert_eq!(intensity(None, Some("eastus")).unwrap().g_per_kwh, 323.05);
        assert_eq!(
            intensity(None, Some("swedencentral")).unwrap().g_per_kwh,
            41.0
        );
        // 2.5 kWh in us-central1: 2.5 x 412.72 = 1031.8 g.
        let ia = intensity(None, Some("us-central1")).unwrap();
        assert!(close(co2_kg(2.5, &ia), 1.0318));
    }

    #[test]
    fn every_region_resolves_to_a_finite_intensity() {
        assert!(REGIONS.len() >= 30);
        for r in REGIONS.iter() {
            let i = region_intensity(r);
            assert!(i.g_per_kwh.is_finite() && i.g_per_kwh > 0.0, "{}", r.code);
            assert!(!i.country_name.is_empty(), "{}", r.code);
        }
        let text = listing();
        assert_eq!(
            text.lines().count(),
            1 + 1 + COUNTRIES.len() + REGIONS.len()
        );
    }

    #[test]
    fn tables_cover_the_g20_and_the_nordics_without_duplicates() {
        let g20 = [
            "AR", "AU", "BR", "CA", "CN", "FR", "DE", "IN", "ID", "IT", "JP", "KR", "MX", "RU",
            "SA", "ZA", "TR", "GB", "US",
        ];
        let nordics = ["DK", "FI", "IS", "NO", "SE"];
        for code in g20.iter().chain(&nordics) {
            assert!(intensity(Some(code), None).is_ok(), "{code}");
        }
        assert!(COUNTRIES.len() >= 40);
        let mut codes: Vec<String> = COUNTRIES
            .iter()
            .flat_map(|c| [c.alpha2.clone(), c.alpha3.clone()])
            .chain(REGIONS.iter().map(|r| r.code.clone()))
            .collect();
        let n = codes.len();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), n);
    }

    #[test]
    fn shipped_tables_keep_the_values_of_the_old_literals() {
        let countries = parse_countries(data::COUNTRY_INTENSITY_CSV).unwrap();
        let regions = parse_regions(data::CLOUD_REGIONS_CSV, &countries).unwrap();
        assert_eq!((countries.len(), regions.len()), (66, 66));
        let by = |p: &str| regions.iter().filter(|r| r.provider == p).count();
        assert_eq!((by("gcp"), by("aws"), by("azure")), (29, 17, 20));
        let c = |a3: &str| countries.iter().find(|c| c.alpha3 == a3).cloned().unwrap();
        let row = |a2: &str, a3: &str, name: &str, g: f64, year: u16| CountryRow {
            alpha2: a2.into(),
            alpha3: a3.into(),
            name: name.into(),
            g_per_kwh: g,
            year,
        };
        assert_eq!(
            c("ARE"),
            row("AE", "ARE", "United Arab Emirates", 561.0, 2022)
        );
        assert_eq!(c("IND"), row("IN", "IND", "India", 713.0, 2023));
        assert_eq!(c("ISL"), row("IS", "ISL", "Iceland", 28.0, 2022));
        assert_eq!(c("KAZ"), row("KZ", "KAZ", "Kazakhstan", 821.0, 2023));
        assert_eq!(c("ZAF"), row("ZA", "ZAF", "South Africa", 708.0, 2023));
        let r = |code: &str| regions.iter().find(|r| r.code == code).cloned().unwrap();
        assert_eq!(
            r("australia-southeast1"),
            Region {
                code: "australia-southeast1".into(),
                provider: "gcp".into(),
                place: "Sydney".into(),
                grid: Grid::Published("AUS".into(), 497.5),
            }
        );
        assert_eq!(r("europe-north2").grid, Grid::Published("SWE".into(), 2.73));
        assert_eq!(
            r("centralus").grid,
            Grid::SameGridAs("us-central1".into(), "Iowa (MISO)".into())
        );
        assert_eq!(r("canadacentral").place, "Toronto");
        assert_eq!(r("ap-south-1").grid, Grid::Country("IND".into()));
        assert_eq!(r("swedencentral").place, "Gavle");
        // Looked up through the public API, as before.
        assert_eq!(intensity(None, Some("westus")).unwrap().g_per_kwh, 169.28);
        assert_eq!(intensity(None, Some("eu-west-1")).unwrap().g_per_kwh, 291.0);
        assert_eq!(intensity(Some("PL"), None).unwrap().g_per_kwh, 662.0);
        // Each file names its source in its header comment.
        assert!(data::COUNTRY_INTENSITY_CSV.contains("Our World\n# in Data"));
        assert!(data::CLOUD_REGIONS_CSV.contains("GoogleCloudPlatform/region-carbon-info"));
    }

    #[test]
    fn malformed_intensity_rows_are_errors() {
        let head = "# source\nalpha2,alpha3,name,g_per_kwh,year\n";
        let bad = |rows: &str| parse_countries(&format!("{head}{rows}")).unwrap_err();
        let file = COUNTRIES_FILE;
        assert!(
            bad("FR,FRA,France,56,2023\nDE,DEU,Germany,high,2023\n")
                .starts_with(&format!("{file} line 4: "))
        );
        assert_eq!(
            bad("FR,FRA,France,-56,2023\n"),
            format!("{file} line 3: g_per_kwh -56 is not a positive number")
        );
        assert_eq!(
            bad("fr,FRA,France,56,2023\n"),
            format!("{file} line 3: \"fr\"/\"FRA\" are not ISO alpha-2/alpha-3 codes")
        );
        assert_eq!(
            bad("FR,FRA,France,56,23\n"),
            format!("{file} line 3: year 23 is implausible")
        );
        assert_eq!(
            bad("FR,FRA,France,56,2023\nFX,FRA,France bis,56,2023\n"),
            format!("{file}: \"FRA\" appears twice")
        );
        assert!(bad("FR,FRA,France,56\n").starts_with(&format!("{file}: ")));

        let countries = parse_countries(data::COUNTRY_INTENSITY_CSV).unwrap();
        let head = "provider,code,place,basis,ref,grid,g_per_kwh\n";
        let gcp = "gcp,us-east4,Virginia,published,USA,,323.05\n";
        let bad =
            |rows: &str| parse_regions(&format!("{head}{gcp}{rows}"), &countries).unwrap_err();
        let file = REGIONS_FILE;
        assert_eq!(
            bad("ibm,us-south,Dallas,country,USA,,\n"),
            format!("{file} line 3: provider \"ibm\" is not aws, gcp or azure")
        );
        assert!(bad("aws,x,y,nearby,USA,,\n").starts_with(&format!("{file} line 3: ")));
        assert_eq!(
            bad("aws,eu-x,Paris,country,XYZ,,\n"),
            format!("{file} line 3: ref \"XYZ\" is not an alpha-3 code of {COUNTRIES_FILE}")
        );
        assert_eq!(
            bad("aws,eu-x,Paris,country,FRA,,56\n"),
            format!("{file} line 3: only a published row carries g_per_kwh")
        );
        assert_eq!(
            bad("aws,us-x,Ohio,same_grid,us-east9,PJM,\n"),
            format!("{file}: us-x refers to \"us-east9\", which is not a published GCP row")
        );
        assert_eq!(
            bad("aws,US-EAST4,Virginia,country,USA,,\n"),
            format!("{file}: \"us-east4\" appears twice")
        );
    }

    #[test]
    fn unknown_codes_are_errors_that_name_them() {
        let err = intensity(Some("XX"), None).unwrap_err();
        assert!(err.starts_with("unknown country code \"XX\""), "{err}");
        assert!(err.contains("US/USA") && err.contains(" SE "), "{err}");
        let err = intensity(Some("FR"), Some("mars-north1")).unwrap_err();
        assert!(
            err.starts_with("unknown cloud region \"mars-north1\""),
            "{err}"
        );
        assert!(
            err.contains("us-east-1") && err.contains("listing()"),
            "{err}"
        );
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

    #[test]
    fn header_is_the_documented_column_list() {
        assert_eq!(emissions_csv_header(), EMISSIONS_COLUMNS.join(","));
        assert_eq!(emissions_csv_header().split(',').count(), 38);
        let line = EmissionsRow::default().to_csv_line();
        assert_eq!(split_csv(&line).len(), EMISSIONS_COLUMNS.len());
    }

    #[test]
    fn a_filled_row() {
        let mut row = EmissionsRow {
            timestamp: "2026-08-09T10:11:12".into(),
            run_id: "r1".into(),
            duration: 100.0,
            cpu_power: 52.875,
            ram_power: 10.0,
            cpu_energy: 0.0015,
            ram_energy: 0.0005,
            energy_consumed: 0.002,
            cpu_count: 2,
            cpu_model: "AMD EPYC".into(),
            ram_total_size: 23.54,
            os: "Linux-6.8.0-x86_64".into(),
            ..Default::default()
        };
        let fr = intensity(Some("FR"), None).unwrap();
        row.set_location(&fr);
        row.set_emissions(&fr);
        // 0.002 kWh x 56 g = 0.112 g = 0.000112 kg, over 100 s.
        assert!(close(row.emissions, 0.000112));
        assert!(close(row.emissions_rate, 0.00000112));
        let f = split_csv(&row.to_csv_line());
        let col =
            |name: &str| f[EMISSIONS_COLUMNS.iter().position(|c| *c == name).unwrap()].clone();
        assert_eq!(col("timestamp"), "2026-08-09T10:11:12");
        assert_eq!(col("project_name"), "headstart");
        assert_eq!(col("duration"), "100");
        assert_eq!(col("cpu_power"), "52.875");
        assert_eq!(col("country_name"), "France");
        assert_eq!(col("country_iso_code"), "FRA");
        assert_eq!(col("cloud_provider"), "");
        assert_eq!(col("on_cloud"), "N");
        assert_eq!(col("longitude"), "");
        assert_eq!(col("python_version"), "");
        assert_eq!(col("tracking_mode"), "process");
        assert_eq!(col("pue"), "1");
        let mut cloud = row.clone();
        cloud.set_location(&intensity(None, Some("us-west-2")).unwrap());
        let f = split_csv(&cloud.to_csv_line());
        assert_eq!(f[18..20], ["aws".to_string(), "us-west-2".to_string()]);
        assert_eq!(f[35], "Y");
    }

    #[test]
    fn fields_with_commas_or_quotes_are_quoted() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        let row = EmissionsRow {
            cpu_model: "Intel(R) Xeon(R), \"fast\"".into(),
            ..Default::default()
        };
        let line = row.to_csv_line();
        assert!(
            line.contains(",\"Intel(R) Xeon(R), \"\"fast\"\"\","),
            "{line}"
        );
        let fields = split_csv(&line);
        assert_eq!(fields.len(), 38);
        assert_eq!(fields[24], "Intel(R) Xeon(R), \"fast\"");
    }

    #[test]
    fn append_writes_the_header_once_and_refuses_other_headers() {
        let path = temp_file("append");
        let row = EmissionsRow::default();
        append_emissions_csv(&path, &row).unwrap();
        append_emissions_csv(&path, &row).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], emissions_csv_header());
        assert_eq!(lines[1], row.to_csv_line());
        assert!(text.ends_with('\n'));

        // A file cut short of its last newline gets one before the new row.
        fs::write(&path, format!("{}\n{}", HEADER, row.to_csv_line())).unwrap();
        append_emissions_csv(&path, &row).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 3);

        // An older CodeCarbon header (no water_consumed) is not touched.
        let old = HEADER.replace("water_consumed,", "");
        fs::write(&path, format!("{old}\n")).unwrap();
        let err = append_emissions_csv(&path, &row).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let msg = err.to_string();
        assert!(
            msg.contains("column 15 is \"country_name\" where \"water_consumed\" is expected"),
            "{msg}"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{old}\n"));

        // An empty file is treated as new.
        fs::write(&path, "").unwrap();
        append_emissions_csv(&path, &row).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 2);
        fs::remove_file(&path).unwrap();
    }

    #[test]
    fn timestamps_and_run_ids() {
        let at = |s: u64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s);
        assert_eq!(timestamp_utc(at(0)), "1970-01-01T00:00:00");
        assert_eq!(timestamp_utc(at(1_700_000_000)), "2023-11-14T22:13:20");
        assert_eq!(timestamp_utc(at(951_782_400)), "2000-02-29T00:00:00");
        assert_eq!(timestamp_utc(at(4_107_542_399)), "2100-02-28T23:59:59");
        let (a, b) = (new_run_id(), new_run_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
    }
}
