"""The facts the doctor collects: one typed, JSON-able tree that rules read by dotted path.

Every field has a neutral default, so a probe that could not read something leaves the default and records
why in its ``error`` field; rules judge that too. The tree is the contract between probes and rule files:
rename a field and the rules that read it stop loading (the loader checks every path against this schema).

Annotations here are evaluated as the classes are built (no ``from __future__ import annotations``): pydantic
would otherwise compile each of the three hundred annotation strings on every run.
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FACTS_SCHEMA = "wandoc.facts/1"


def _empty_list() -> list[Any]:
    """``default_factory=list``, minus its cost: pydantic reads each factory's signature when the class is built,
    and a builtin's is parsed from its text (tokenize) every time; a hundred fields made that 10 ms of each run."""
    return []


def _empty_dict() -> dict[str, Any]:
    return {}


class _Facts(BaseModel):
    model_config = ConfigDict(extra="ignore")


# -- machine ---------------------------------------------------------------------------------------------


class PlatformFacts(_Facts):
    os: str = Field("", description='"Windows", "Linux", "Darwin"')
    release: str = ""
    machine: str = Field("", description='"x86_64", "AMD64", "arm64"')
    wsl: bool = False
    rosetta: bool = Field(False, description="this Python is an x86_64 build running under Rosetta 2 on Apple silicon")
    python: str = ""
    python_executable: str = ""
    shell: str = Field("bash", description='the shell a fix is written for: "cmd", "powershell", "bash", "zsh", "fish"')
    error: str | None = None


class EnvFacts(_Facts):
    """The process environment; values of secret-looking variables are replaced by "<redacted>"."""

    vars: dict[str, str] = Field(default_factory=_empty_dict)


class AmdGpu(_Facts):
    node: int = Field(0, description="the KFD topology node")
    gfx: str = Field("", description='the ISA the GPU runs: "gfx1100" (RX 7900), "gfx1031" (RX 6700 XT), "gfx942"')
    vram_bytes: int = 0


class AmdFacts(_Facts):
    """AMD GPUs as ROCm's kernel driver (KFD) shows them, read from /sys without ROCm or torch (Linux only)."""

    checked: bool = Field(False, description="the KFD topology could be looked at (Linux); false elsewhere")
    kfd: bool = Field(False, description="/dev/kfd exists: the amdgpu driver offers ROCm compute")
    gpus: list[AmdGpu] = Field(default_factory=_empty_list)
    error: str | None = None


class SystemFacts(_Facts):
    cpu_count: int = 0
    cpu_model: str = ""
    ram_total_bytes: int = 0
    ram_available_bytes: int = 0
    swap_total_bytes: int = 0
    swap_used_bytes: int = 0
    error: str | None = None


class GpuProcess(_Facts):
    pid: int = 0
    name: str = ""
    used_bytes: int = 0
    is_self: bool = False


class GpuFacts(_Facts):
    index: int = 0
    name: str = ""
    uuid: str = ""
    compute_capability: float = Field(0.0, description="8.6, 8.9, 9.0")
    memory_total_bytes: int = 0
    memory_used_bytes: int = 0
    memory_free_bytes: int = 0
    processes: list[GpuProcess] = Field(default_factory=_empty_list)
    other_processes_bytes: int = Field(0, description="VRAM held by processes other than this one")
    other_processes_from: Literal["", "processes", "device"] = Field(
        "",
        description='"processes": the sum of what NVML lists per process; "device": the device\'s used memory '
        "minus this process's, where per-process figures are hidden (Windows WDDM)",
    )
    nvlink_active: int | None = Field(
        None, description="NVLink links up: 0 when the GPU has none (PCIe only); None when NVML could not say"
    )
    pcie_gen_current: int = 0
    pcie_gen_max: int = 0
    pcie_width_current: int = 0
    pcie_width_max: int = 0
    throttle_reasons: list[str] = Field(
        default_factory=_empty_list, description='e.g. "hw_slowdown", "sw_thermal", "sw_power_cap"'
    )
    utilization_gpu: int = 0
    power_w: float = 0.0
    power_limit_w: float = 0.0
    errors: list[str] = Field(default_factory=_empty_list, description="fields NVML refused to read")


class GpuPair(_Facts):
    a: int = 0
    b: int = 0
    level: str = Field(
        "",
        description='the nearest thing both GPUs hang off: "same_board", "single_switch", "multiple_switches", '
        '"host_bridge", "numa_node" or "system" (across CPU sockets)',
    )


class NvmlFacts(_Facts):
    available: bool = False
    error: str | None = Field(None, description='"NVML library not found", "driver not loaded", ...')
    driver_version: str = ""
    cuda_driver_version: float = Field(0.0, description="the highest CUDA version the driver supports, e.g. 12.4")
    gpu_count: int = 0
    gpus: list[GpuFacts] = Field(default_factory=_empty_list)
    visible_indices: list[int] | None = Field(
        None,
        description="GPUs the run will see after CUDA_VISIBLE_DEVICES (indices into ``gpus``); "
        "None when the variable is unset",
    )
    visible_error: str | None = Field(None, description="\"CUDA_VISIBLE_DEVICES='3' names a GPU that does not exist\"")
    topology: list[GpuPair] = Field(
        default_factory=_empty_list, description="how each pair of GPUs is connected, from NVML's common ancestor"
    )


# -- software --------------------------------------------------------------------------------------------


class TorchDeep(_Facts):
    """What a subprocess that really imports torch saw (``--deep``)."""

    ran: bool = False
    import_ok: bool = False
    error: str | None = Field(None, description="the import error or the probe's timeout, verbatim")
    cuda_available: bool = False
    device_count: int = 0
    device_name: str = ""
    bf16_supported: bool = False
    matmul_ok: bool = False
    matmul_ms: float = 0.0
    cudnn_version: int = 0
    seconds: float = 0.0
    attention_imports: dict[str, str] = Field(
        default_factory=_empty_dict,
        description='installed attention modules imported next to torch: "flash_attn" -> "ok", or the import error '
        '(an extension built for another torch fails here with "undefined symbol")',
    )


class TorchFacts(_Facts):
    installed: bool = False
    version: str = Field("", description='"2.6.0+cu124"')
    version_tuple: list[int] = Field(default_factory=_empty_list, description="[2, 6, 0]")
    cuda_build: float = Field(0.0, description="12.4; 0 for a CPU-only or ROCm build")
    hip_build: str = ""
    is_cpu_build: bool = False
    location: str = ""
    error: str | None = None
    cudnn_version: int = Field(
        0,
        description="the cuDNN a CUDA build will load, read from files without importing torch: 91002 for 9.10.2 "
        "(as torch.backends.cudnn.version() writes it); 0 unknown",
    )
    cudnn_from: str = Field("", description='"nvidia-cudnn-cu12 9.10.2.21", "torch/lib/cudnn64_9.dll version resource"')
    hip_runtime: bool | None = Field(
        None,
        description="a ROCm build's HIP runtime (libamdhip64) is in torch/lib or the ROCm folder; "
        "None for other builds",
    )
    zluda: str = Field(
        "",
        description="why torch looks patched for ZLUDA (CUDA on an AMD GPU), e.g. "
        '"torch/lib/cublas64_11.dll is 0.3 MiB (ZLUDA\'s stand-in)"; "" when it does not',
    )
    zluda_cache: bool | None = Field(
        None,
        description="ZLUDA's compiled-kernel cache (%LOCALAPPDATA%\\ZLUDA\\ComputeCache) holds a database: "
        "kernels were compiled before; None when not ZLUDA or not Windows",
    )
    deep: TorchDeep = Field(default_factory=TorchDeep)


class PackageFacts(_Facts):
    name: str = Field("", description='the distribution found ("flash-attn"), or the module where only that is there')
    installed: bool = False
    version: str = ""
    location: str = ""
    error: str | None = None
    build_label: str = Field(
        "",
        description='what the wheel says it was built for: the local version ("cu12torch2.6cxx11abiFALSE"), from '
        "the version or the file name it was installed from",
    )
    built_torch: str = Field("", description='torch major.minor the build is for, e.g. "2.6"; "" unknown')
    built_cuda: float = Field(0.0, description="CUDA the build is for: 12.4, or 12.0 where only the major is known")


class PackagesFacts(_Facts):
    """Attention and compile stack, and the few others Wan's code needs, from installed metadata only."""

    flash_attn: PackageFacts = Field(default_factory=PackageFacts)
    flash_attn_3: PackageFacts = Field(default_factory=PackageFacts, description="flash_attn_interface (Hopper)")
    sageattention: PackageFacts = Field(default_factory=PackageFacts)
    xformers: PackageFacts = Field(default_factory=PackageFacts)
    triton: PackageFacts = Field(default_factory=PackageFacts, description='"triton" or "triton-windows"')
    diffusers: PackageFacts = Field(default_factory=PackageFacts)
    accelerate: PackageFacts = Field(default_factory=PackageFacts)
    fa3_varlen_returns: Literal["", "tuple", "tensor"] = Field(
        "",
        description='what the installed flash_attn_interface.flash_attn_varlen_func returns by default: "tuple" '
        '(out, softmax_lse) as FA3 did until July 2025, "tensor" (out alone) since; "" unknown',
    )
    fa3_varlen_returns_from: str = Field(
        "", description='"the installed flash_attn_interface.py", "version 3.0.0 (a release after the change)"'
    )


# -- the user's checkout ---------------------------------------------------------------------------------


SITE_KINDS: dict[str, str] = {
    "sdpa_flash_disabled": "sdp_kernel/sdpa_kernel(enable_flash=False) or enable_flash_sdp(False)",
    "sdpa_math_only": "SDPA restricted to the math backend (SDPBackend.MATH alone, or enable_math only)",
    "mask_per_call": "a dense attention mask built inside forward or an attention helper (each call)",
    "item_in_forward": ".item() / .tolist() inside forward or a helper it calls (a GPU sync per call)",
    "cpu_in_forward": ".cpu() / .to('cpu') / .numpy() inside forward or a helper it calls",
    "float_upcast_in_attention": ".float() / .to(torch.float32) on q/k/v inside an attention helper",
    "python_loop_kernel": "a Python for/while loop around attention or matmul kernels (chunked attention)",
    "empty_cache_in_loop": "torch.cuda.empty_cache() inside a loop or forward",
    "sync_in_forward": "torch.cuda.synchronize() inside forward or a helper it calls",
    "compile_call": "torch.compile(...) is called",
    "complex_rope": "RoPE computed on complex numbers (torch.view_as_complex, torch.polar, complex dtypes): "
    "Inductor generates no code for complex ops",
    "flash_attention_call": "the model calls a flash_attention(...) that requires flash_attn",
    "sdpa_call": "torch.nn.functional.scaled_dot_product_attention is called",
    "fa3_index0": "flash_attn_interface's varlen result indexed with [0] (breaks with newer FA3 releases)",
    "sequential_offload": "enable_sequential_cpu_offload() (every weight moved in every forward)",
    "model_offload": "enable_model_cpu_offload() or a model moved to the CPU between uses",
}


# The kinds as a type, so a rule comparing a site's kind with a misspelt one is refused when it loads.
SiteKind = Literal[tuple(SITE_KINDS)]  # type: ignore[valid-type]


class CodeSite(_Facts):
    """One place in the user's code that a rule may judge."""

    kind: SiteKind = Field(description="what the code does there (SITE_KINDS in wandoc/facts.py says each)")
    file: str = Field(description="relative to the checkout")
    line: int = 0
    function: str = Field("", description='qualified: "WanAttentionBlock.forward", "attention"')
    snippet: str = ""
    on_path: bool = Field(True, description="the file is imported by the run")
    reach: Literal["forward", "once", "conditional", "never", "unknown"] = Field(
        "forward",
        description='How often the line runs in this run: "forward" (every step), "once", "conditional" (under '
        'a condition the doctor could not decide), "never", or "unknown" (no entry script to start from). Facts '
        "recorded before reach existed read as forward, as they were judged then.",
    )
    reach_why: str = Field("", description="The reach in words: the calls that get there, the condition, or why not")
    conditions: list[str] = Field(
        default_factory=_empty_list, description="Conditions this run makes true on the way there: `offload_model`"
    )
    chosen_by: list[str] = Field(
        default_factory=_empty_list, description="Run arguments whose values lead to the site (a choice, not a bug)"
    )
    module: str = Field("", description='Module path inside the model when known: "blocks.*.self_attn"')
    via: list[str] = Field(default_factory=_empty_list, description="Functions called from the entry down to the site")


class EnvRead(_Facts):
    var: str
    file: str
    line: int = 0
    default: str | None = None
    compared_values: list[str] = Field(
        default_factory=_empty_list, description="literals the value is compared against"
    )
    on_path: bool = True


class EnvVarUse(_Facts):
    """Everything known about one variable: who sets it, who reads it, what values the readers accept."""

    set_in_env: bool = False
    value: str | None = Field(None, description="the value in this environment (redacted when secret-looking)")
    set_by: list[str] = Field(
        default_factory=_empty_list, description='launchers that set it: "run_wan.bat", "main.js"'
    )
    launcher_values: list[str] = Field(default_factory=_empty_list)
    read_on_path: bool = False
    read_off_path: bool = False
    files_on_path: list[str] = Field(default_factory=_empty_list)
    files_off_path: list[str] = Field(default_factory=_empty_list)
    compared_values: list[str] = Field(default_factory=_empty_list, description="from on-path reads")
    value_ignored: bool = Field(False, description="set (env or launcher) to a value no on-path comparison accepts")


class ArgFacts(_Facts):
    name: str = Field(description='dest, e.g. "offload_model"')
    flags: list[str] = Field(default_factory=_empty_list)
    default: Any = None
    type: str = ""
    action: str = ""
    choices: list[Any] | None = None


class ImportPath(_Facts):
    entry: str = ""
    modules: list[str] = Field(default_factory=_empty_list, description="checkout files on the run's path (relative)")
    conditional: list[str] = Field(
        default_factory=_empty_list, description="reached only through imports inside functions"
    )
    third_party: list[str] = Field(default_factory=_empty_list, description="top-level names")
    unimported: list[str] = Field(default_factory=_empty_list, description="checkout .py files the run never imports")
    other_tasks: list[str] = Field(
        default_factory=_empty_list,
        description="imported (a package __init__ imports every pipeline) but serving only other tasks: not judged",
    )
    unresolved: list[str] = Field(
        default_factory=_empty_list, description='"wan/x.py:12 importlib.import_module(name)"'
    )
    errors: list[str] = Field(default_factory=_empty_list, description='"wan/bad.py:3 SyntaxError: ..."')
    errors_on_path: list[str] = Field(
        default_factory=_empty_list,
        description="Files the run imports that do not parse: `wan/x.py:12 SyntaxError: ...`",
    )
    skipped: list[str] = Field(
        default_factory=_empty_list,
        description="Files not read, with why: over the size bound, past the file count bound",
    )


class CallGraphFacts(_Facts):
    """The call graph from the entry that decides each code site's reach."""

    entry: str = Field("", description="The entry script the graph starts at; empty when none was resolved")
    entry_from: str = Field(
        "", description='How the entry was found: "generate.py", "--script", "known entry of <fork>", or ""'
    )
    functions_walked: int = Field(0, description="Functions the walk entered")
    model_forwards: int = Field(
        0, description="Model forward() methods the walk found running every step (0: it never reached a model)"
    )
    statements: int = Field(0, description="Statements visited, all argument contexts together")
    unresolved_calls: int = Field(0, description="Calls whose target the doctor could not tell (library calls too)")
    cut: str | None = Field(None, description="Why the walk stopped early, if it did")


class LauncherSet(_Facts):
    file: str
    line: int = 0
    var: str
    value: str


class RepoFacts(_Facts):
    path: str = ""
    given: bool = Field(False, description="the user named a checkout (or one was found in the current directory)")
    found: bool = False
    is_wan: bool = False
    error: str | None = None
    entry_script: str = ""
    wan_version: str = Field("", description='"2.1", "2.2" when the code says so')
    args: list[ArgFacts] = Field(default_factory=_empty_list)
    given_args: list[str] = Field(default_factory=_empty_list, description='what came after "--"')
    args_error: str | None = Field(None, description="the given args do not parse the way generate.py would parse them")
    args_note: str | None = Field(
        None, description="Why the checkout's parser could not be replayed (not the user's fault)"
    )
    args_file: str = Field("", description="The file whose add_argument calls define the run's flags")
    effective: dict[str, Any] = Field(default_factory=_empty_dict, description="dest -> value the run will use")
    offload_defaulted: bool = Field(False, description="offload_model came from the None -> True runtime default")
    import_path: ImportPath = Field(default_factory=ImportPath)
    call_graph: CallGraphFacts = Field(default_factory=CallGraphFacts)
    model_configs: dict[str, dict[str, Any]] = Field(
        default_factory=_empty_dict,
        description="Task -> values of the checkout's own wan/configs (num_heads, dim, ...), read as text",
    )
    env_reads: list[EnvRead] = Field(default_factory=_empty_list)
    env_vars: dict[str, EnvVarUse] = Field(default_factory=_empty_dict)
    launchers: list[LauncherSet] = Field(default_factory=_empty_list)
    sites: list[CodeSite] = Field(default_factory=_empty_list)
    flash_attn_required: bool = Field(False, description="the model's attention asserts flash_attn is importable")
    sdpa_fallback: bool = Field(False, description="the on-path attention falls back to scaled_dot_product_attention")
    fa3_result_indexed: bool = Field(False, description="on-path code indexes flash_attn_interface's result with [0]")


# -- checkpoints -----------------------------------------------------------------------------------------


class CheckpointFile(_Facts):
    path: str
    format: Literal["", "safetensors", "pth", "pt", "bin", "gguf", "ckpt"] = Field("", description="from the extension")
    bytes: int = 0
    params: int = 0
    dtypes: dict[str, int] = Field(
        default_factory=_empty_dict, description='dtype -> parameter count ("BF16", "F32", "F8_E4M3")'
    )
    error: str | None = None


class CheckpointModel(_Facts):
    """A folder of weight files that together form one model (a DiT expert, T5, the VAE)."""

    folder: str
    role: Literal["", "dit", "high_noise_model", "low_noise_model", "t5", "vae", "other"] = Field(
        "", description="what the model is, from its folder and file names"
    )
    files: int = 0
    bytes: int = 0
    params: int = 0
    main_dtype: str = Field("", description="the dtype holding most parameters")
    dtypes: dict[str, int] = Field(default_factory=_empty_dict)


class StorageFacts(_Facts):
    """Where the checkpoint folder lives: the filesystem, the disk under it, and (with ``--deep``) how fast it reads."""

    path: str = ""
    mount_point: str = ""
    fstype: str = Field("", description='"ext4", "ntfs", "nfs4", "cifs", "fuse.rclone", "9p" (WSL\'s Windows drives)')
    device: str = Field("", description='what is mounted: "/dev/nvme0n1p2", "//nas/models", "server:/export"')
    network: bool = Field(False, description="a network filesystem (NFS, SMB/CIFS, 9p, ...) or a remote drive")
    fuse: bool = Field(False, description="a FUSE filesystem (rclone, s3fs, sshfs): every read goes through a daemon")
    disk: str = Field("", description='the block device under the filesystem: "sda", "nvme0n1", "vda"')
    rotational: bool | None = Field(None, description="the kernel says the disk spins (an HDD); None when unknown")
    virtual_disk: bool = Field(
        False, description="a VM's virtual disk (virtio, Xen), whose rotational flag says nothing about the medium"
    )
    read_mib_s: float = Field(0.0, description="measured uncached read speed of a checkpoint file; 0 when not measured")
    read_bytes: int = Field(0, description="bytes the measurement read")
    read_note: str = Field("", description='why no measurement: "not measured (add --deep)", "direct reads refused"')
    error: str | None = None


class CheckpointFacts(_Facts):
    dir: str = ""
    given: bool = Field(False, description="a folder was named: --ckpt-dir, or the run's own --ckpt_dir after --")
    from_args: bool = Field(
        False, description="the folder is the run's own --ckpt_dir (after --), found relative to the checkout"
    )
    found: bool = False
    error: str | None = None
    files: list[CheckpointFile] = Field(default_factory=_empty_list)
    models: list[CheckpointModel] = Field(default_factory=_empty_list)
    dit_params: int = Field(0, description="one expert")
    dit_experts: int = 0
    dit_main_dtype: str = ""
    dit_bytes_on_disk: int = Field(0, description="one expert")
    storage: StorageFacts = Field(default_factory=StorageFacts)


# -- git -------------------------------------------------------------------------------------------------


class ChangedFile(_Facts):
    path: str
    status: str = Field("M", description="A, M, D, R")
    on_path_here: bool = False
    on_path_there: bool = False


class ChangedFunction(_Facts):
    """A function whose body differs between the compared sides, in a file on the run's path."""

    file: str
    function: str = Field(description='Qualified: "WanSelfAttention.forward", "attention"')
    status: str = Field("changed", description='"changed", "added" (only here) or "removed" (only there)')
    reach: Literal["forward", "runs", "never"] = Field(
        "never",
        description='How this run runs it on the side that has it: "forward", "runs" (once or under a '
        'condition), "never"',
    )
    line: int = 0


class BranchSide(_Facts):
    """The perf-relevant code facts of one side of a comparison."""

    ref: str = ""
    commit: str = ""
    sites: list[CodeSite] = Field(default_factory=_empty_list)
    effective: dict[str, Any] = Field(default_factory=_empty_dict)
    arg_defaults: dict[str, Any] = Field(default_factory=_empty_dict)
    env_reads: list[EnvRead] = Field(default_factory=_empty_list)


class GitFacts(_Facts):
    available: bool = False
    is_repo: bool = False
    error: str | None = None
    root: str = ""
    branch: str = ""
    commit: str = ""
    dirty: bool = False
    compare_ref: str = ""
    compare_error: str | None = None
    changed: list[ChangedFile] = Field(default_factory=_empty_list)
    changed_on_path: list[str] = Field(default_factory=_empty_list)
    changed_off_path: list[str] = Field(default_factory=_empty_list)
    here: BranchSide = Field(default_factory=BranchSide)
    there: BranchSide = Field(default_factory=BranchSide)
    sites_added: list[SiteKind] = Field(
        default_factory=_empty_list, description="site kinds present on the run's path on one side only"
    )
    sites_removed: list[SiteKind] = Field(default_factory=_empty_list)
    defaults_changed: dict[str, list[Any]] = Field(default_factory=_empty_dict, description="arg -> [there, here]")
    functions_changed: list[ChangedFunction] = Field(
        default_factory=_empty_list, description="Functions on the run's path whose body differs between the sides"
    )


# -- what the run will need ------------------------------------------------------------------------------


class Estimate(_Facts):
    """Memory the run will need, from the task, the checkpoints and the effective args."""

    task: str = ""
    known: bool = False
    dit_params: int = Field(0, description="one expert")
    dit_experts: int = 1
    dit_runtime_dtype: str = Field("", description='"BF16" or "F32" after --convert_model_dtype (or not)')
    dit_bytes: int = Field(0, description="one expert at the runtime dtype")
    t5_bytes: int = 0
    vae_bytes: int = 0
    activations_bytes: int = 0
    peak_vram_no_offload: int = Field(0, description="every model resident")
    peak_vram_offload: int = Field(0, description="only the active DiT expert and activations resident")
    offloaded_bytes: int = Field(0, description="what offload parks in system RAM")
    note: str = ""


class ParallelFacts(_Facts):
    """How the run splits over GPUs: the processes torchrun starts and Wan's multi-GPU arguments."""

    world_size: int | None = Field(
        None,
        description="processes in the run, from WORLD_SIZE; None when it is unset "
        "(the doctor is not under torchrun: unknown, not 1) or unreadable",
    )
    world_size_from: Literal["", "torchrun", "WORLD_SIZE"] = Field(
        "", description='"torchrun" (its WORLD_SIZE), "WORLD_SIZE" (exported by hand), "" when unknown'
    )
    local_world_size: int | None = Field(None, description="processes on this machine: one per GPU it needs")
    local_world_size_from: Literal["", "LOCAL_WORLD_SIZE", "WORLD_SIZE, one machine"] = Field(
        "", description="where local_world_size came from"
    )
    ulysses_size: int | None = Field(
        None, description="--ulysses_size the run gets; None when generate.py has none or is unknown"
    )
    ring_size: int | None = Field(
        None, description="--ring_size (Wan2.1 only); None where generate.py has no such argument"
    )
    sp_size: int | None = Field(
        None, description="ulysses_size x ring_size: the processes sequence parallel spreads over"
    )
    dit_fsdp: bool = False
    t5_fsdp: bool = False
    requested: bool = Field(
        False, description="sequence parallel above 1, --dit_fsdp or --t5_fsdp: the run needs torchrun"
    )
    task: str = ""
    heads: int | None = Field(None, description="attention heads of the task's DiT; None for a task nobody knows")
    heads_from: str = Field("", description='"official config of t2v-14B", "model size 14B in the task name"')
    ulysses_choices: list[int] = Field(
        default_factory=_empty_list, description="sizes the heads allow, up to the visible GPUs"
    )
    visible_gpus: int | None = Field(
        None, description="GPUs the run can see after CUDA_VISIBLE_DEVICES; None without NVML"
    )
    error: str | None = Field(None, description="\"WORLD_SIZE='eight' is not a whole number: ...\"")


class Facts(_Facts):
    schema_: str = Field(default=FACTS_SCHEMA, alias="schema")
    collected_at: str = ""
    wandoc_version: str = ""
    platform: PlatformFacts = Field(default_factory=PlatformFacts)
    env: EnvFacts = Field(default_factory=EnvFacts)
    system: SystemFacts = Field(default_factory=SystemFacts)
    nvml: NvmlFacts = Field(default_factory=NvmlFacts)
    amd: AmdFacts = Field(default_factory=AmdFacts)
    torch: TorchFacts = Field(default_factory=TorchFacts)
    packages: PackagesFacts = Field(default_factory=PackagesFacts)
    repo: RepoFacts = Field(default_factory=RepoFacts)
    checkpoints: CheckpointFacts = Field(default_factory=CheckpointFacts)
    git: GitFacts = Field(default_factory=GitFacts)
    estimate: Estimate = Field(default_factory=Estimate)
    parallel: ParallelFacts = Field(default_factory=ParallelFacts)
    probe_errors: list[str] = Field(default_factory=_empty_list, description='a probe that crashed anyway: "gpu: ..."')

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    def as_tree(self) -> dict[str, Any]:
        """The JSON-able tree the rules read."""
        return self.model_dump(mode="json", by_alias=True)
