//! `emissions.csv` in CodeCarbon's format: the row, appending it to the
//! file, and the timestamp, run id and OS that fill it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::intensity::{Intensity, co2_kg};

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
    use crate::cost::carbon::intensity;
    use crate::cost::carbon::tests::close;

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
