//! ONNX Runtime: find or fetch the library, the environment, execution providers, sessions.
//!
//! [`Runtime::new`] provisions the shared library (see [`provision`]), for a GPU device finds and
//! preloads the CUDA libraries (see [`cuda`]), and initialises ort's environment once per process.
//! Sessions are then built with the device's execution provider registered with
//! `error_on_failure`: a GPU device never silently runs on the CPU.

pub mod cuda;
pub mod provision;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use ort::environment::Environment;
use ort::ep::{self, ExecutionProviderDispatch};
use ort::logging::LogLevel;
use ort::session::Session;
use ort::session::builder::{AutoDevicePolicy, SessionBuilder};
use ort::value::{DynValue, Tensor};
use serde::Serialize;

pub use provision::{Flavor, LibrarySource, ORT_VERSION};

use crate::tensor::TensorData;

/// Errors from finding, fetching or using ONNX Runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// ONNX Runtime reported an error.
    #[error("onnxruntime: {0}")]
    Ort(String),
    /// A session could not be created from a model.
    #[error("{path}: onnxruntime cannot load the model: {message}")]
    Session {
        /// The model file (or `<memory>`).
        path: PathBuf,
        /// ONNX Runtime's message.
        message: String,
    },
    /// The library could not be loaded.
    #[error("{path}: cannot load ONNX Runtime: {message}")]
    Load {
        /// The library.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// This process already loaded another ONNX Runtime library (ort loads one per process).
    #[error(
        "ONNX Runtime is already loaded from {loaded} in this process; cannot switch to {requested}"
    )]
    AlreadyLoaded {
        /// The library in use.
        loaded: PathBuf,
        /// The library asked for.
        requested: PathBuf,
    },
    /// The library is not cached and could not be fetched.
    #[error("{message}; fix: {fix}")]
    Fetch {
        /// What failed.
        message: String,
        /// The one command that fixes it.
        fix: String,
    },
    /// The cache folder is unusable.
    #[error("{path}: {message}")]
    Cache {
        /// The folder or file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `--device` is none of [`Device::choices`].
    #[error("--device {0:?}: expected {choices}", choices = Device::choices())]
    BadDevice(String),
    /// No NVIDIA driver.
    #[error(
        "no NVIDIA driver: libcuda.so.1 cannot be loaded ({message}); a GPU device needs an NVIDIA GPU and its driver"
    )]
    NoDriver {
        /// The loader's message.
        message: String,
    },
    /// CUDA/cuDNN/TensorRT libraries are missing.
    #[error(
        "GPU libraries not found: {missing} (searched {searched} folders: CUDA_HOME, pip site-packages nvidia/*/lib, system); fix: {fix}"
    )]
    MissingGpuLibs {
        /// Comma-separated sonames.
        missing: String,
        /// How many folders were searched.
        searched: usize,
        /// The command that installs them.
        fix: String,
    },
    /// A CUDA/cuDNN/TensorRT library was found but does not load.
    #[error("{path}: cannot load: {message}")]
    GpuLibLoad {
        /// The library.
        path: PathBuf,
        /// The loader's message.
        message: String,
    },
    /// The ONNX Runtime library has no provider library for the device.
    #[error(
        "{library}: this ONNX Runtime has no {provider} ({file} is not beside it; a CPU-only build?); fix: unset ORT_DYLIB_PATH and omit --ort-lib to use the pinned onnxruntime-gpu {ORT_VERSION}, or point --ort-lib at an onnxruntime-gpu library"
    )]
    NoProvider {
        /// The ONNX Runtime library.
        library: PathBuf,
        /// The execution provider.
        provider: &'static str,
        /// The provider library file expected beside it.
        file: &'static str,
    },
    /// The execution provider could not be registered.
    #[error("{provider} could not be registered on {device}: {message}")]
    Provider {
        /// The execution provider.
        provider: &'static str,
        /// The device.
        device: Device,
        /// ONNX Runtime's message (and its last logged error).
        message: String,
    },
    /// A tensor value does not match its dims.
    #[error("initializer `{name}`: {message}")]
    Value {
        /// The tensor.
        name: String,
        /// Why.
        message: String,
    },
}

impl RuntimeError {
    /// Names `path` in a session error about bytes built in memory from that model file
    /// (errors must name the file the user gave).
    pub fn for_model(self, path: &Path) -> Self {
        match self {
            RuntimeError::Session { path: p, message } if p == Path::new("<memory>") => {
                RuntimeError::Session {
                    path: path.to_path_buf(),
                    message,
                }
            }
            e => e,
        }
    }
}

/// An execution provider smd-onnx can register: a row of [`PROVIDERS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// ONNX Runtime's CPU provider.
    Cpu,
    /// The CUDA provider.
    Cuda,
    /// The TensorRT provider.
    TensorRt,
}

/// What smd-onnx knows about one execution provider.
#[derive(Debug)]
pub struct ProviderInfo {
    /// The provider this row describes.
    pub provider: Provider,
    /// Its `--device` name, as printed.
    pub name: &'static str,
    /// Other `--device` spellings accepted.
    pub aliases: &'static [&'static str],
    /// The device takes a GPU index (`name:N`, default 0).
    pub indexed: bool,
    /// ONNX Runtime's name for the provider.
    pub ort_name: &'static str,
    /// The provider library that must sit beside the ONNX Runtime library, if any.
    pub library_file: Option<&'static str>,
    /// The provider registered after this one, for what this one cannot run.
    pub fallback: Option<Provider>,
    /// The build of ONNX Runtime the provider needs.
    pub flavor: Flavor,
}

/// Every execution provider, in the order `--device`'s help lists them: parsing, the error
/// listing the choices, [`Device::providers`], the provider files checked and the report of
/// available providers all read this table. Row `i` describes the provider whose discriminant
/// is `i`. How a provider is configured on a session is in `Runtime::execution_providers`.
pub const PROVIDERS: [ProviderInfo; 3] = [
    ProviderInfo {
        provider: Provider::Cpu,
        name: "cpu",
        aliases: &[],
        indexed: false,
        ort_name: "CPUExecutionProvider",
        library_file: None,
        fallback: None,
        flavor: Flavor::Cpu,
    },
    ProviderInfo {
        provider: Provider::Cuda,
        name: "cuda",
        aliases: &["gpu"],
        indexed: true,
        ort_name: "CUDAExecutionProvider",
        library_file: Some("libonnxruntime_providers_cuda.so"),
        fallback: Some(Provider::Cpu),
        flavor: Flavor::Gpu,
    },
    ProviderInfo {
        provider: Provider::TensorRt,
        name: "tensorrt",
        aliases: &["trt"],
        indexed: true,
        ort_name: "TensorrtExecutionProvider",
        library_file: Some("libonnxruntime_providers_tensorrt.so"),
        fallback: Some(Provider::Cuda),
        flavor: Flavor::Gpu,
    },
];

impl Provider {
    /// The provider's row of [`PROVIDERS`].
    pub fn info(self) -> &'static ProviderInfo {
        &PROVIDERS[self as usize]
    }

    /// This provider and its fallbacks, in priority order (the CPU provider last).
    pub fn chain(self) -> impl Iterator<Item = Provider> {
        std::iter::successors(Some(self), |p| p.info().fallback)
    }

    /// Whether the loaded ONNX Runtime contains the provider.
    fn is_available(self) -> bool {
        let ok = match self {
            Provider::Cpu => <ep::CPU as ep::ExecutionProvider>::is_available(),
            Provider::Cuda => <ep::CUDA as ep::ExecutionProvider>::is_available(),
            Provider::TensorRt => <ep::TensorRT as ep::ExecutionProvider>::is_available(),
        };
        ok.unwrap_or(false)
    }
}

/// Where a session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Device {
    /// ONNX Runtime's CPU provider.
    #[default]
    Cpu,
    /// The CUDA provider on this GPU index.
    Cuda(u32),
    /// The TensorRT provider (CUDA for what TensorRT cannot run) on this GPU index.
    TensorRt(u32),
}

impl Device {
    /// The device of `provider` on GPU `index` (ignored by providers that take none).
    pub fn new(provider: Provider, index: u32) -> Self {
        match provider {
            Provider::Cpu => Self::Cpu,
            Provider::Cuda => Self::Cuda(index),
            Provider::TensorRt => Self::TensorRt(index),
        }
    }

    /// The execution provider sessions are built for first.
    pub fn provider(self) -> Provider {
        match self {
            Self::Cpu => Provider::Cpu,
            Self::Cuda(_) => Provider::Cuda,
            Self::TensorRt(_) => Provider::TensorRt,
        }
    }

    /// The GPU index (0 for the CPU).
    pub fn index(self) -> u32 {
        match self {
            Self::Cpu => 0,
            Self::Cuda(i) | Self::TensorRt(i) => i,
        }
    }

    /// The `--device` spellings, for help and errors: `cpu, cuda[:N] or tensorrt[:N]`.
    pub fn choices() -> String {
        let names: Vec<String> = PROVIDERS
            .iter()
            .map(|p| {
                let index = if p.indexed { "[:N]" } else { "" };
                format!("{}{index}", p.name)
            })
            .collect();
        match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.concat(),
        }
    }

    /// The `--device` default's spelling.
    pub fn default_name() -> &'static str {
        Self::default().provider().info().name
    }

    /// True for CUDA and TensorRT.
    pub fn is_gpu(self) -> bool {
        self.flavor() == Flavor::Gpu
    }

    /// The build of ONNX Runtime this device needs.
    pub fn flavor(self) -> Flavor {
        self.provider().info().flavor
    }

    /// Execution providers in priority order (ONNX Runtime names).
    pub fn providers(self) -> Vec<&'static str> {
        self.provider().chain().map(|p| p.info().ort_name).collect()
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let info = self.provider().info();
        if info.indexed {
            write!(f, "{}:{}", info.name, self.index())
        } else {
            f.write_str(info.name)
        }
    }
}

impl Serialize for Device {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl FromStr for Device {
    type Err = RuntimeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || RuntimeError::BadDevice(s.to_string());
        let t = s.trim().to_ascii_lowercase();
        let (kind, index) = match t.split_once(':') {
            Some((k, i)) => {
                if i.is_empty() || !i.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                (k, Some(i.parse::<u32>().map_err(|_| bad())?))
            }
            None => (t.as_str(), None),
        };
        let info = PROVIDERS
            .iter()
            .find(|p| p.name == kind || p.aliases.contains(&kind))
            .ok_or_else(bad)?;
        if index.is_some() && !info.indexed {
            return Err(bad());
        }
        Ok(Self::new(info.provider, index.unwrap_or(0)))
    }
}

/// How to set up ONNX Runtime.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Execution device.
    pub device: Device,
    /// The library (`--ort-lib`); `None`: `ORT_DYLIB_PATH`, else the cache, else fetched.
    pub library: Option<PathBuf>,
    /// Cache root; `None`: `SMD_ONNX_CACHE`, `XDG_CACHE_HOME/smd-onnx` or `~/.cache/smd-onnx`.
    pub cache_root: Option<PathBuf>,
    /// Fetch the pinned wheel with pip when the cache lacks it.
    pub allow_fetch: bool,
    /// Intra-op threads; `None`: every available core. Sessions share one process-wide pool
    /// sized by the first runtime; a runtime asking for another count gives its sessions
    /// their own pools.
    pub intra_threads: Option<usize>,
    /// TensorRT: keep built engines on disk, keyed by the caller's weights hash.
    pub tensorrt_engine_cache: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            library: None,
            cache_root: None,
            allow_fetch: true,
            intra_threads: None,
            tensorrt_engine_cache: true,
        }
    }
}

/// What was loaded, for reports (`smd-onnx runtime`, `score --json`).
#[derive(Debug, Clone, Serialize)]
pub struct RuntimeInfo {
    /// The shared library.
    pub library: PathBuf,
    /// How it was found.
    pub source: LibrarySource,
    /// ONNX Runtime's version string.
    pub version: String,
    /// The device sessions run on.
    pub device: Device,
    /// Execution providers registered for each session, in priority order.
    pub providers: Vec<&'static str>,
    /// Providers this build of ONNX Runtime contains.
    pub available_providers: Vec<String>,
    /// The cache folder, when the library came from the cache.
    pub cache_dir: Option<PathBuf>,
    /// GPU libraries found and preloaded (GPU devices only).
    pub gpu_libraries: Option<cuda::GpuLibs>,
    /// Intra-op threads per session.
    pub intra_threads: usize,
}

/// The process-wide ort state: ort allows one library and one environment per process.
struct Loaded {
    env: Environment,
    library: PathBuf,
    version: String,
    /// Threads of the environment's global intra-op pool.
    pool_threads: usize,
}

static LOADED: Mutex<Option<Arc<Loaded>>> = Mutex::new(None);

/// Recent messages ONNX Runtime logged at warning level or above (bounded).
static ORT_LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn ort_logger(level: LogLevel, _cat: &str, _id: &str, location: &str, message: &str) {
    let line = format!("{message} ({location})").replace(['\n', '\r'], " ");
    if std::env::var_os("ORT_LOG").is_some() {
        eprintln!("onnxruntime [{level:?}]: {line}");
    }
    if level >= LogLevel::Warning
        && let Ok(mut log) = ORT_LOG.lock()
    {
        if log.len() >= 32 {
            log.remove(0);
        }
        log.push(line);
    }
}

/// Drains ONNX Runtime's recent log messages (warnings and errors), oldest first.
pub fn take_ort_log() -> Vec<String> {
    ORT_LOG
        .lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default()
}

fn ort_level_from_env() -> LogLevel {
    match std::env::var("ORT_LOG").as_deref() {
        Ok("verbose") => LogLevel::Verbose,
        Ok("info") => LogLevel::Info,
        Ok("error") => LogLevel::Error,
        Ok("fatal") => LogLevel::Fatal,
        _ => LogLevel::Warning,
    }
}

/// An initialised ONNX Runtime for one device.
#[derive(Clone)]
pub struct Runtime {
    loaded: Arc<Loaded>,
    device: Device,
    source: LibrarySource,
    cache_dir: Option<PathBuf>,
    cache_root: PathBuf,
    gpu: Option<cuda::GpuLibs>,
    intra_threads: usize,
    tensorrt_engine_cache: bool,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("library", &self.loaded.library)
            .field("version", &self.loaded.version)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

fn ort_msg<R>(e: ort::Error<R>) -> String {
    e.message().replace(['\n', '\r'], " ")
}

impl Runtime {
    /// Provisions the library, preloads GPU libraries for a GPU device, and initialises the
    /// process's ort environment (once; a later call must name the same library).
    pub fn new(config: &RuntimeConfig) -> Result<Self, RuntimeError> {
        let device = config.device;
        let cache_root = match &config.cache_root {
            Some(r) => r.clone(),
            None => provision::cache_root()?,
        };
        let explicit = config.library.clone().or_else(|| {
            std::env::var_os("ORT_DYLIB_PATH")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
        // With a library given, a missing provider is the clearer message; without one, the
        // driver check comes first so that no machine without a GPU fetches the GPU build.
        if let Some(lib) = &explicit
            && device.is_gpu()
        {
            check_provider_files(lib, device)?;
        }
        let gpu = if device.is_gpu() {
            let driver = cuda::load_driver()?;
            let mut libs = cuda::preload(matches!(device, Device::TensorRt(_)))?;
            libs.loaded.insert(0, driver);
            Some(libs)
        } else {
            None
        };
        let prov = provision::provision(
            config.library.as_deref(),
            device.flavor(),
            &cache_root,
            config.allow_fetch,
        )?;
        if device.is_gpu() {
            check_provider_files(&prov.library, device)?;
        }
        let intra_threads = config.intra_threads.filter(|&n| n > 0).unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        let loaded = load(&prov.library, intra_threads)?;
        Ok(Self {
            loaded,
            device,
            source: prov.source,
            cache_dir: prov.cache_dir,
            cache_root,
            gpu,
            intra_threads,
            tensorrt_engine_cache: config.tensorrt_engine_cache,
        })
    }

    /// The device sessions run on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The ort environment.
    pub fn environment(&self) -> &Environment {
        &self.loaded.env
    }

    /// For reports: library, version, device, providers.
    pub fn describe(&self) -> RuntimeInfo {
        RuntimeInfo {
            library: self.loaded.library.clone(),
            source: self.source,
            version: self.loaded.version.clone(),
            device: self.device,
            providers: self.device.providers(),
            available_providers: available_providers(),
            cache_dir: self.cache_dir.clone(),
            gpu_libraries: self.gpu.clone(),
            intra_threads: self.intra_threads,
        }
    }

    /// A session builder configured for the device: threads, no spinning, memory pattern, the
    /// execution provider with `error_on_failure`. `weights_key` (a content hash of the
    /// weights) keys TensorRT's engine cache; without it the engine cache is off, because
    /// TensorRT's own key ignores weight values.
    pub fn builder(&self, weights_key: Option<&str>) -> Result<SessionBuilder, RuntimeError> {
        let b = Session::builder(&self.loaded.env).map_err(|e| RuntimeError::Ort(ort_msg(e)))?;
        let map = |e: ort::Error<SessionBuilder>| RuntimeError::Ort(ort_msg(e));
        // Sessions run on the environment's thread pool (a child's session then starts no
        // threads), unless this runtime wants another thread count than the pool has.
        let b = if self.intra_threads == self.loaded.pool_threads {
            b
        } else {
            let b = b.with_independent_thread_pool().map_err(map)?;
            let b = b.with_intra_threads(self.intra_threads).map_err(map)?;
            let b = b.with_inter_threads(1).map_err(map)?;
            // Idle sessions' spinning pools slow the active one (DESIGN §5).
            let b = b.with_intra_op_spinning(false).map_err(map)?;
            b.with_inter_op_spinning(false).map_err(map)?
        };
        let b = b.with_memory_pattern(true).map_err(map)?;
        let b = b.with_env_allocators().map_err(map)?;
        let eps = self.execution_providers(weights_key)?;
        if eps.is_empty() {
            return b
                .with_auto_device(AutoDevicePolicy::PreferCPU)
                .map_err(|e| RuntimeError::Ort(ort_msg(e)));
        }
        take_ort_log();
        b.with_execution_providers(eps).map_err(|e| {
            let mut message = ort_msg(e);
            if let Some(last) = take_ort_log().pop() {
                message = format!("{message}; {last}");
            }
            RuntimeError::Provider {
                provider: self.device.providers().first().copied().unwrap_or("?"),
                device: self.device,
                message,
            }
        })
    }

    fn execution_providers(
        &self,
        weights_key: Option<&str>,
    ) -> Result<Vec<ExecutionProviderDispatch>, RuntimeError> {
        let cuda = |id: u32| -> Result<ExecutionProviderDispatch, RuntimeError> {
            let id = i32::try_from(id).map_err(|_| RuntimeError::BadDevice(id.to_string()))?;
            Ok(ep::CUDA::default()
                .with_device_id(id)
                // Children are short-lived sessions: exhaustive search costs 0.3-1.3 s per shape.
                .with_conv_algorithm_search(ep::cuda::ConvAlgorithmSearch::Heuristic)
                .build()
                .error_on_failure())
        };
        let i = self.device.index();
        let mut out = Vec::new();
        for provider in self.device.provider().chain() {
            match provider {
                // ONNX Runtime always has the CPU provider last; it is not registered.
                Provider::Cpu => {}
                Provider::Cuda => out.push(cuda(i)?),
                Provider::TensorRt => out.push(self.tensorrt(i, weights_key)?),
            }
        }
        Ok(out)
    }

    /// The TensorRT provider on GPU `i`, with its timing cache and (given a weights key) its
    /// engine cache under the cache root.
    fn tensorrt(
        &self,
        i: u32,
        weights_key: Option<&str>,
    ) -> Result<ExecutionProviderDispatch, RuntimeError> {
        let id = i32::try_from(i).map_err(|_| RuntimeError::BadDevice(i.to_string()))?;
        let trt_dir = self.cache_root.join("tensorrt");
        let timing = trt_dir.join("timing");
        let _ = std::fs::create_dir_all(&timing);
        let mut trt = ep::TensorRT::default()
            .with_device_id(id)
            .with_timing_cache(true)
            .with_timing_cache_path(timing.display());
        let key = weights_key.map(sanitize_key).filter(|k| !k.is_empty());
        trt = match key {
            Some(k) if self.tensorrt_engine_cache => {
                let engines = trt_dir.join("engines");
                let _ = std::fs::create_dir_all(&engines);
                trt.with_engine_cache(true)
                    .with_engine_cache_path(engines.display())
                    .with_engine_cache_prefix(format!("w{k}"))
            }
            _ => trt.with_engine_cache(false),
        };
        Ok(trt.build().error_on_failure())
    }

    /// A session for the model file, with `overrides` replacing initializer values (ONNX
    /// Runtime's AddInitializer: the file is not rewritten).
    pub fn session_from_file(
        &self,
        path: &Path,
        overrides: Vec<(String, DynValue)>,
    ) -> Result<Session, RuntimeError> {
        self.session_from_file_keyed(path, overrides, None)
    }

    /// [`Self::session_from_file`] with a weights key for TensorRT's engine cache.
    pub fn session_from_file_keyed(
        &self,
        path: &Path,
        overrides: Vec<(String, DynValue)>,
        weights_key: Option<&str>,
    ) -> Result<Session, RuntimeError> {
        let mut b = self.builder(weights_key)?;
        for (name, value) in overrides {
            b = b
                .with_initializer(&name, value)
                .map_err(|e| RuntimeError::Value {
                    name: name.clone(),
                    message: ort_msg(e),
                })?;
        }
        take_ort_log();
        b.commit_from_file(path)
            .map_err(|e| self.session_error(path, e))
    }

    /// A session for the model file followed by `suffix` (graph outputs to add, see
    /// [`crate::score::Predictor::session_suffix`]); the plain file when `suffix` is empty.
    /// External data resolves next to the file either way.
    pub fn session_with_suffix(
        &self,
        path: &Path,
        suffix: &[u8],
        weights_key: Option<&str>,
    ) -> Result<Session, RuntimeError> {
        if suffix.is_empty() {
            return self.session_from_file_keyed(path, Vec::new(), weights_key);
        }
        let mut bytes = std::fs::read(path).map_err(|source| RuntimeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        bytes.extend_from_slice(suffix);
        let folder = path.parent().filter(|p| !p.as_os_str().is_empty());
        self.session_from_template(&bytes, &[], folder, weights_key)
            .map_err(|e| e.for_model(path))
    }

    /// A session for a model held in memory.
    pub fn session_from_memory(&self, bytes: &[u8]) -> Result<Session, RuntimeError> {
        self.session_from_memory_keyed(bytes, None)
    }

    /// [`Self::session_from_memory`] with a weights key for TensorRT's engine cache.
    pub fn session_from_memory_keyed(
        &self,
        bytes: &[u8],
        weights_key: Option<&str>,
    ) -> Result<Session, RuntimeError> {
        let mut b = self.builder(weights_key)?;
        take_ort_log();
        b.commit_from_memory(bytes)
            .map_err(|e| self.session_error(Path::new("<memory>"), e))
    }

    /// A session for model bytes whose external initializers (see
    /// [`crate::onnx::external_template`]) are the given values: ONNX Runtime uses them as if
    /// they were in the file, before optimizing the graph. `folder` resolves the model's other
    /// external data (the original model's folder).
    pub fn session_from_template(
        &self,
        bytes: &[u8],
        initializers: &[(String, std::sync::Arc<DynValue>)],
        folder: Option<&Path>,
        weights_key: Option<&str>,
    ) -> Result<Session, RuntimeError> {
        let mut b = self.builder(weights_key)?;
        for (name, value) in initializers {
            b = b
                .with_external_initializer(name, value.clone())
                .map_err(|e| RuntimeError::Value {
                    name: name.clone(),
                    message: ort_msg(e),
                })?;
        }
        if let Some(dir) = folder {
            b = b
                .with_config_entry(
                    "session.model_external_initializers_file_folder_path",
                    dir.to_string_lossy(),
                )
                .map_err(|e| RuntimeError::Ort(ort_msg(e)))?;
        }
        take_ort_log();
        b.commit_from_memory(bytes)
            .map_err(|e| self.session_error(Path::new("<memory>"), e))
    }

    fn session_error(&self, path: &Path, e: ort::Error) -> RuntimeError {
        let mut message = ort_msg(e);
        if self.device.is_gpu()
            && let Some(last) = take_ort_log().pop()
            && !message.contains(&last)
        {
            message = format!("{message}; {last}");
        }
        RuntimeError::Session {
            path: path.to_path_buf(),
            message,
        }
    }
}

impl Runtime {
    /// Runs a tiny model (MatMul + Add) on the device and checks its result: proves that the
    /// library loads, the execution provider registers and a kernel runs.
    pub fn self_check(&self) -> Result<(), RuntimeError> {
        let m = crate::onnx::build::linear_model(
            &[1.0, 0.0, 0.0, 1.0],
            &[0.5, -0.5],
            2,
            2,
            false,
            None,
        );
        let mut s = self.session_from_memory(&m)?;
        let x = Tensor::from_array(([1usize, 2], vec![1.0f32, 2.0]))
            .map_err(|e| RuntimeError::Ort(ort_msg(e)))?;
        let out = s
            .run(ort::inputs!["x" => x])
            .map_err(|e| RuntimeError::Ort(ort_msg(e)))?;
        let y = out
            .get("y")
            .ok_or_else(|| RuntimeError::Ort("self-check model produced no output".into()))?;
        let (_, v) = y
            .try_extract_tensor::<f32>()
            .map_err(|e| RuntimeError::Ort(ort_msg(e)))?;
        if v != [1.5f32, 1.5] {
            return Err(RuntimeError::Ort(format!(
                "self-check computed {v:?} instead of [1.5, 1.5] on {}",
                self.device
            )));
        }
        Ok(())
    }
}

fn sanitize_key(k: &str) -> String {
    k.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(32)
        .collect()
}

/// Providers compiled into the loaded ONNX Runtime, most specialised first (as ONNX Runtime
/// lists them).
fn available_providers() -> Vec<String> {
    PROVIDERS
        .iter()
        .rev()
        .filter(|p| p.provider.is_available())
        .map(|p| p.ort_name.to_string())
        .collect()
}

/// Checks that the provider libraries `device` needs sit beside `library`.
fn check_provider_files(library: &Path, device: Device) -> Result<(), RuntimeError> {
    let dir = library.parent().unwrap_or(Path::new("."));
    for info in device.provider().chain().map(Provider::info) {
        let Some(file) = info.library_file else {
            continue;
        };
        if !dir.join(file).is_file() {
            return Err(RuntimeError::NoProvider {
                library: library.to_path_buf(),
                provider: info.ort_name,
                file,
            });
        }
    }
    Ok(())
}

/// Loads the library and builds the environment once per process, with a global intra-op
/// thread pool of `threads` threads that do not spin (the first caller's count).
fn load(library: &Path, threads: usize) -> Result<Arc<Loaded>, RuntimeError> {
    let mut slot = LOADED
        .lock()
        .map_err(|_| RuntimeError::Ort("runtime state poisoned".into()))?;
    let canon = std::fs::canonicalize(library).unwrap_or_else(|_| library.to_path_buf());
    if let Some(l) = slot.as_ref() {
        if l.library == canon {
            return Ok(l.clone());
        }
        return Err(RuntimeError::AlreadyLoaded {
            loaded: l.library.clone(),
            requested: canon,
        });
    }
    let version = version_of(&canon)?;
    let builder = ort::init_from(&canon).map_err(|e| RuntimeError::Load {
        path: canon.clone(),
        message: e.to_string().replace(['\n', '\r'], " "),
    })?;
    let pool = ort::environment::GlobalThreadPoolOptions::default()
        .with_intra_threads(threads)
        .and_then(|o| o.with_inter_threads(1))
        .and_then(|o| o.with_spin_control(false))
        .map_err(|e| RuntimeError::Load {
            path: canon.clone(),
            message: ort_msg(e),
        })?;
    let env = builder
        .with_global_thread_pool(pool)
        .with_name("smd-onnx")
        .with_telemetry(false)
        .with_logger(Arc::new(ort_logger))
        .build()
        .map_err(|e| RuntimeError::Load {
            path: canon.clone(),
            message: ort_msg(e),
        })?;
    env.set_log_level(ort_level_from_env());
    share_cpu_arena(&env).map_err(|message| RuntimeError::Load {
        path: canon.clone(),
        message,
    })?;
    let l = Arc::new(Loaded {
        env,
        library: canon,
        version,
        pool_threads: threads,
    });
    *slot = Some(l.clone());
    Ok(l)
}

/// Registers one CPU memory arena in the environment, which every session uses
/// (`session.use_env_allocators`). A session with its own arena faults its memory in on its
/// first run (half a second per child session for a MobileNet at batch 256 on 2 cores); sessions
/// built one after another on a shared arena reuse the memory the previous one left.
pub fn share_cpu_arena(env: &Environment) -> Result<(), String> {
    use ort::AsPointer;
    use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
    let mem = MemoryInfo::new(
        AllocationDevice::CPU,
        0,
        AllocatorType::Arena,
        MemoryType::Default,
    )
    .map_err(|e| e.message().to_string())?;
    let api = ort::api();
    // SAFETY: both pointers are live ORT objects; a null arena configuration asks for the
    // defaults. The returned status, when not null, is read and released here.
    unsafe {
        let status =
            (api.CreateAndRegisterAllocator)(env.ptr().cast_mut(), mem.ptr(), std::ptr::null());
        let status = status.0;
        if status.is_null() {
            return Ok(());
        }
        let msg = std::ffi::CStr::from_ptr((api.GetErrorMessage)(status))
            .to_string_lossy()
            .into_owned();
        (api.ReleaseStatus)(status);
        Err(format!("registering the shared CPU arena: {msg}"))
    }
}

/// ONNX Runtime's own version string (`OrtGetApiBase()->GetVersionString()`).
fn version_of(library: &Path) -> Result<String, RuntimeError> {
    let err = |m: String| RuntimeError::Load {
        path: library.to_path_buf(),
        message: m,
    };
    // SAFETY: loading the library runs its initialisers, as ort's own loading does next; the
    // symbol's signature is the C API's `const OrtApiBase* OrtGetApiBase(void)`.
    unsafe {
        let lib = libloading::Library::new(library)
            .map_err(|e| err(e.to_string().replace(['\n', '\r'], " ")))?;
        let get: libloading::Symbol<unsafe extern "C" fn() -> *const ort::sys::OrtApiBase> = lib
            .get(b"OrtGetApiBase")
            .map_err(|_| err("not an ONNX Runtime library (no OrtGetApiBase)".into()))?;
        let base = get();
        if base.is_null() {
            return Err(err("OrtGetApiBase returned null".into()));
        }
        let v = ((*base).GetVersionString)();
        if v.is_null() {
            return Err(err("no version string".into()));
        }
        let s = std::ffi::CStr::from_ptr(v).to_string_lossy().into_owned();
        // Keep the library loaded: ort loads it again (same handle) and never unloads it.
        std::mem::forget(lib);
        Ok(s)
    }
}

/// An ort tensor value holding `data` with shape `dims` (for session overrides). The values
/// are moved, not copied.
pub fn tensor_value(name: &str, data: TensorData, dims: &[i64]) -> Result<DynValue, RuntimeError> {
    let bad = |m: String| RuntimeError::Value {
        name: name.to_string(),
        message: m,
    };
    let mut n: usize = 1;
    for &d in dims {
        let d = usize::try_from(d).map_err(|_| bad(format!("negative dimension in {dims:?}")))?;
        n = n
            .checked_mul(d)
            .ok_or_else(|| bad(format!("dims {dims:?} overflow")))?;
    }
    if n != data.len() {
        return Err(bad(format!(
            "{} values do not fill dims {dims:?} ({n} elements)",
            data.len()
        )));
    }
    let shape = dims.to_vec();
    let v = match data {
        TensorData::F32(v) => Tensor::from_array((shape, v)).map(|t| t.into_dyn()),
        TensorData::F64(v) => Tensor::from_array((shape, v)).map(|t| t.into_dyn()),
        TensorData::F16(v) => Tensor::from_array((shape, v)).map(|t| t.into_dyn()),
        TensorData::BF16(v) => Tensor::from_array((shape, v)).map(|t| t.into_dyn()),
    };
    v.map_err(|e| bad(ort_msg(e)))
}

/// Mutable access to the values of a float tensor value made by [`tensor_value`].
pub fn tensor_mut(value: &mut DynValue) -> Option<crate::TensorMut<'_>> {
    use crate::TensorMut;
    use half::{bf16, f16};
    // One extraction per type: the value knows its element type, only one succeeds.
    let kind = value.dtype().clone();
    match kind {
        ort::value::ValueType::Tensor { ty, .. } => match ty {
            ort::value::TensorElementType::Float32 => value
                .try_extract_tensor_mut::<f32>()
                .ok()
                .map(|(_, v)| TensorMut::F32(v)),
            ort::value::TensorElementType::Float64 => value
                .try_extract_tensor_mut::<f64>()
                .ok()
                .map(|(_, v)| TensorMut::F64(v)),
            ort::value::TensorElementType::Float16 => value
                .try_extract_tensor_mut::<f16>()
                .ok()
                .map(|(_, v)| TensorMut::F16(v)),
            ort::value::TensorElementType::Bfloat16 => value
                .try_extract_tensor_mut::<bf16>()
                .ok()
                .map(|(_, v)| TensorMut::BF16(v)),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_parsing() {
        assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
        assert_eq!("CUDA".parse::<Device>().unwrap(), Device::Cuda(0));
        assert_eq!("cuda:1".parse::<Device>().unwrap(), Device::Cuda(1));
        assert_eq!("tensorrt:0".parse::<Device>().unwrap(), Device::TensorRt(0));
        assert_eq!("tensorrt".parse::<Device>().unwrap(), Device::TensorRt(0));
        for bad in [
            "",
            "cpu:0",
            "cuda:",
            "cuda:-1",
            "cuda:x",
            "rocm",
            "cuda:1:2",
            "cuda:99999999999",
        ] {
            assert!(bad.parse::<Device>().is_err(), "{bad:?}");
        }
        for d in [Device::Cpu, Device::Cuda(3), Device::TensorRt(2)] {
            assert_eq!(d.to_string().parse::<Device>().unwrap(), d);
        }
    }

    #[test]
    fn provider_table() {
        for (i, p) in PROVIDERS.iter().enumerate() {
            assert_eq!(p.provider as usize, i, "row {i} is out of order");
            let d = Device::new(p.provider, 2);
            assert_eq!(d.provider(), p.provider);
            assert_eq!(d.to_string().parse::<Device>().unwrap(), d);
            for alias in p.aliases {
                assert_eq!(alias.parse::<Device>().unwrap(), Device::new(p.provider, 0));
            }
            assert_eq!(p.provider.chain().last(), Some(Provider::Cpu));
        }
        assert_eq!(Device::choices(), "cpu, cuda[:N] or tensorrt[:N]");
        assert_eq!(Device::default_name(), "cpu");
        assert_eq!(
            "rocm".parse::<Device>().unwrap_err().to_string(),
            "--device \"rocm\": expected cpu, cuda[:N] or tensorrt[:N]"
        );
        assert_eq!(
            Device::TensorRt(1).providers(),
            [
                "TensorrtExecutionProvider",
                "CUDAExecutionProvider",
                "CPUExecutionProvider"
            ]
        );
        assert_eq!(
            Device::Cuda(1).providers(),
            ["CUDAExecutionProvider", "CPUExecutionProvider"]
        );
        assert_eq!(Device::Cpu.providers(), ["CPUExecutionProvider"]);
    }

    #[test]
    fn device_flavor_and_providers() {
        assert_eq!(Device::Cpu.flavor(), Flavor::Cpu);
        assert_eq!(Device::Cuda(0).flavor(), Flavor::Gpu);
        assert_eq!(
            Device::TensorRt(0).providers()[0],
            "TensorrtExecutionProvider"
        );
    }

    #[test]
    fn engine_cache_keys_are_sanitised() {
        assert_eq!(sanitize_key("ab/../cd"), "abcd");
        assert_eq!(sanitize_key(&"f".repeat(64)).len(), 32);
    }
}
