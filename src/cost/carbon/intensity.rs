//! The carbon intensity of a country's or a cloud region's grid, looked up
//! in the shipped tables (their sources are in the [`carbon`](super) module
//! documentation).

use std::sync::LazyLock;

use serde::Deserialize;

use crate::cost::data;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::carbon::tests::close;

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
}
