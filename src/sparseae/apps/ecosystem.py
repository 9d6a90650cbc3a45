"""SAEs in and out: SAELens folders and EleutherAI sparsify checkpoints to sparseae runs, and back.

The formats, as their loaders read them (sae-lens 6.54: `SAE.load_from_disk`, sae_lens/loading/
pretrained_sae_loaders.py; eai-sparsify 1.3: `SparseCoder.load_from_disk`, sparsify/sparse_coder.py):
- SAELens: a folder with `cfg.json` (architecture, d_in, d_sae, dtype, apply_b_dec_to_input,
  normalize_activations, k for topk, metadata.sae_lens_version; a version below 6 is read by its pre-6
  rules) and `sae_weights.safetensors`: W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in],
  b_dec [d_in], threshold [d_sae] (jumprelu). encode: act((x - b_dec * apply_b_dec_to_input) @ W_enc +
  b_enc); decode: acts @ W_dec + b_dec. act: ReLU (standard), ReLU of the k largest (topk),
  ReLU(z) * (z > threshold) (jumprelu). SAELens saves a trained BatchTopK SAE for inference as jumprelu
  with its learned batch threshold in every unit: so does this exporter (BatchTopK, Matryoshka).
- SAELens transcoders (sae_lens/saes/transcoder.py): architecture 'transcoder' (ReLU) or
  'jumprelu_transcoder', cfg.json with d_out and apply_b_dec_to_input false (its TranscoderConfig refuses
  true), W_dec [d_sae, d_out], b_dec [d_out]; encode: act(x @ W_enc + b_enc); decode as above. SAELens has
  no TopK transcoder, so a sparseae TopK transcoder is refused; L1, JumpReLU and a trained BatchTopK
  (as 'jumprelu_transcoder', its threshold in every unit) are written. Transcoders are not imported.
- sparsify: `cfg.json` (d_in, num_latents or expansion_factor, k, activation 'topk', skip_connection,
  transcode) and `sae.safetensors`: encoder.weight [n, d_in], encoder.bias [n], W_dec [n, d_in], b_dec
  [d_in]; encode: the k largest of ReLU((x - b_dec) W^T + b); decode: acts @ W_dec + b_dec.

sparseae's one-layer model is the same function: encoder.0.weight = W_enc^T, decoder.0.weight = W_dec^T,
its output bias is b_dec and `pre_bias` is apply_b_dec_to_input. A model trained with an input gain
(model.input_scale: inputs times g, outputs divided by g) is exported with g folded in: W_enc * g,
W_dec / g, b_dec / g, the same function of the raw rows (a transcoder: W_enc times its input's gain, W_dec
and b_dec divided by its target's). What neither format can hold is refused in one
line before anything is written: several layers, a non-linear output, a fitted input transform, a code
other than ReLU (a KL model's sigmoid), a pursuit code.

An import writes a sparseae run folder (config.json, model.safetensors with the trained record,
summary.json naming the source) that `eval`, `report` and `probe` read given the data (`--data` or
`--dataset`, recorded in config.json, or changed there later).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from .. import families
from ..config import ModelConfig, RunConfig, SparsityConfig, TrainConfig, resolve
from ..errors import SparseAEError
from ..run.files import atomic_write, atomic_write_json, atomic_write_text, to_json_text
from ..run.output import OutputFolder, check_outside
from ..run.rundir import RunDir, load_run, read_weights

FORMATS = ("saelens", "sparsify")
FILES = {"saelens": ("cfg.json", "sae_weights.safetensors"), "sparsify": ("cfg.json", "sae.safetensors")}
# SAELens's architecture names (and sparsify's activation 'topk'): two are spelled as sparseae's families
STANDARD, TOPK, JUMPRELU = "standard", families.TOPK, families.JUMPRELU
ARCHITECTURES = (STANDARD, TOPK, JUMPRELU)
TRANSCODERS = {STANDARD: "transcoder", JUMPRELU: "jumprelu_transcoder"}
"""SAELens's architecture of a transcoder (a decoder into another space, d_out) of each code."""
SAELENS_FORMAT_VERSION = "6.0.0"
"""metadata.sae_lens_version of an exported cfg.json: the 6.x layout it follows (SAELens reads an older
or missing version by its pre-6 rules)."""
MAX_CFG_BYTES = 1 << 20


@dataclass
class OneLayerSAE:
    """A one-layer SAE in SAELens's orientation, float32 on the CPU."""

    architecture: str
    W_enc: torch.Tensor
    b_enc: torch.Tensor
    W_dec: torch.Tensor
    b_dec: torch.Tensor
    apply_b_dec_to_input: bool = True
    k: int | None = None
    threshold: torch.Tensor | None = None

    @property
    def d_in(self) -> int:
        return self.W_enc.shape[0]

    @property
    def d_sae(self) -> int:
        return self.W_enc.shape[1]

    @property
    def d_out(self) -> int:
        return self.W_dec.shape[1]

    @property
    def transcoder(self) -> bool:
        return self.architecture in TRANSCODERS.values()

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"W_enc": self.W_enc, "b_enc": self.b_enc, "W_dec": self.W_dec, "b_dec": self.b_dec}
        if self.threshold is not None:
            out["threshold"] = self.threshold
        return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in out.items()}

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction by the format's own rule (module docstring): the reference the tests use."""
        z = (x - self.b_dec * self.apply_b_dec_to_input) @ self.W_enc + self.b_enc
        if self.architecture == TOPK:
            vals, idx = z.topk(self.k, dim=-1)
            acts = torch.zeros_like(z).scatter_(-1, idx, vals.relu())
        elif self.architecture in (JUMPRELU, TRANSCODERS[JUMPRELU]):
            acts = z.relu() * (z > self.threshold)
        else:
            acts = z.relu()
        return acts @ self.W_dec + self.b_dec


# --- sparseae -> a one-layer SAE -------------------------------------------------------------------

def check_exportable(model: ModelConfig) -> None:
    """Refuse, in one line, a model that SAELens's one-layer SAEs cannot represent."""
    code_act = model.layer_activations()[-1]
    why = None
    if not model.one_layer():
        layers = (len(model.hidden), len(model.decoder_sizes()) + 1)
        why = "it has {} encoder and {} decoder layers (deep or stacked)".format(*layers)
    elif model.output_activation != "linear":
        why = f"its output activation is '{model.output_activation}', not linear"
    elif model.input_transform != "none":
        why = f"its inputs go through a fitted '{model.input_transform}' transform"
    elif model.topk not in (families.NONE, families.TOPK, families.BATCHTOPK, families.JUMPRELU):
        why = f"its code layer is '{model.topk}'"
    elif model.topk != families.JUMPRELU and code_act != "relu":
        why = f"its code activation is '{code_act}', not ReLU (a KL model's sigmoid code has no SAELens form)"
    elif model.target_dim is not None and model.topk == families.TOPK:
        why = "it is a TopK transcoder (SAELens's transcoders are 'transcoder', ReLU, and 'jumprelu_transcoder')"
    if why is not None:
        raise SparseAEError(f"this model cannot be written as a SAELens SAE: {why}; SAELens holds one-layer ReLU "
                            "SAEs (L1 'standard', TopK, BatchTopK, JumpReLU, Matryoshka) with a linear decoder")


@torch.no_grad()
def one_layer_sae(model) -> OneLayerSAE:
    """The SAE a one-layer sparseae model computes (checked by check_exportable), input gain folded in."""
    c = model.config
    check_exportable(c)
    g_in, g_out = model.input_transform.input_gain().double(), model.input_transform.output_gain().double()
    enc = model.encoder[0]
    W_enc = (enc.weight.double() * g_in).t()
    W_dec = (model.decoder_weights()[0].double() / g_out).t()
    b_dec = model.output_bias().double() / g_out
    parts = dict(W_enc=W_enc.float(), b_enc=enc.bias.float(), W_dec=W_dec.float(), b_dec=b_dec.float(),
                 apply_b_dec_to_input=bool(c.pre_bias))
    names = TRANSCODERS if c.target_dim is not None else {STANDARD: STANDARD, JUMPRELU: JUMPRELU}
    if c.topk == families.JUMPRELU:
        return OneLayerSAE(names[JUMPRELU], threshold=model.gate_threshold().float(), **parts)
    if c.topk == families.BATCHTOPK and float(model.batchtopk_threshold) >= 0:
        # as SAELens saves its own BatchTopK for inference: a JumpReLU with the batch threshold everywhere
        t = torch.full((c.hidden[-1],), float(model.batchtopk_threshold))
        return OneLayerSAE(names[JUMPRELU], threshold=t, **parts)
    if c.topk in (families.TOPK, families.BATCHTOPK):  # a BatchTopK never trained keeps k per example
        if c.target_dim is not None:
            raise SparseAEError("this BatchTopK transcoder never learned its threshold, and SAELens has no TopK "
                                "transcoder: nothing exported")
        return OneLayerSAE(TOPK, k=c.k, **parts)
    return OneLayerSAE(names[STANDARD], **parts)


def saelens_cfg(sae: OneLayerSAE, metadata: dict[str, Any]) -> dict[str, Any]:
    """SAELens 6's cfg.json for `sae` (SAEConfig's fields; its from_dict ignores the others)."""
    cfg: dict[str, Any] = {"architecture": sae.architecture, "d_in": sae.d_in, "d_sae": sae.d_sae,
                           "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": sae.apply_b_dec_to_input,
                           "normalize_activations": "none", "reshape_activations": "none"}
    if sae.transcoder:
        cfg["d_out"] = sae.d_out
    if sae.architecture == TOPK:
        cfg.update(k=sae.k, rescale_acts_by_decoder_norm=False)
    cfg["metadata"] = {"sae_lens_version": SAELENS_FORMAT_VERSION, "sae_lens_training_version": None,
                       "model_name": None, "hook_name": None, **metadata}
    return cfg


def sparsify_files(sae: OneLayerSAE, normalized: bool) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """sparsify's cfg.json and tensors for a TopK SAE that subtracts b_dec first (what SparseCoder computes)."""
    if sae.transcoder:
        raise SparseAEError("sparseae writes transcoders in SAELens's layout only: use --format saelens")
    if sae.architecture != TOPK or not sae.apply_b_dec_to_input:
        raise SparseAEError("sparsify holds TopK SAEs that subtract b_dec from the input (pre_bias); this one is "
                            f"'{sae.architecture}'{'' if sae.apply_b_dec_to_input else ' without pre_bias'}: "
                            "use --format saelens")
    t = sae.tensors()
    cfg = {"activation": TOPK, "expansion_factor": max(1, sae.d_sae // sae.d_in), "normalize_decoder": normalized,
           "num_latents": sae.d_sae, "k": sae.k, "multi_topk": False, "skip_connection": False,
           "transcode": False, "d_in": sae.d_in}
    tensors = {"encoder.weight": t["W_enc"].t().contiguous(), "encoder.bias": t["b_enc"], "W_dec": t["W_dec"],
               "b_dec": t["b_dec"]}
    return cfg, tensors


def claim_export_folder(out_dir: str | os.PathLike, fmt: str, overwrite: bool) -> Path:
    """OUT_DIR: new or empty; with --overwrite, one that holds only this format's two files. Never inside a
    folder sparseae wrote (its files are its own)."""
    if str(out_dir).strip() == "":
        raise SparseAEError("OUT_DIR must name a folder (got an empty path)")
    out = Path(out_dir)
    if os.path.lexists(out) and (out.is_symlink() or not out.is_dir()):
        raise SparseAEError(f"OUT_DIR {out} exists and is not a folder; name a folder for the {fmt} files")
    check_outside(out / FILES[fmt][0], "OUT_DIR")
    if out.is_dir():
        names = sorted(p.name for p in out.iterdir())
        foreign = [n for n in names if n not in FILES[fmt]]
        if foreign:
            raise SparseAEError(f"OUT_DIR {out} holds {foreign[0]}, which a {fmt} folder does not; name a new or "
                                "empty folder")
        if names and not overwrite:
            raise SparseAEError(f"OUT_DIR {out} already holds {names[0]}; pass --overwrite to replace the {fmt} "
                                "files, or name a new folder")
    return out


def export_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike, fmt: str = "saelens",
               overwrite: bool = False) -> OneLayerSAE:
    """Write the run's model as a SAELens folder (or a sparsify checkpoint) in `out_dir`; returns the SAE."""
    if fmt not in FORMATS:
        raise SparseAEError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    run = RunDir(run_dir)
    run.require_folder()
    config = run.read_config()
    check_exportable(config.model)  # before the weights are read
    out = claim_export_folder(out_dir, fmt, overwrite)
    model = load_run(run_dir)
    sae = one_layer_sae(model)
    if not all(bool(torch.isfinite(t).all()) for t in sae.tensors().values()):
        raise SparseAEError(f"{run_dir}: the model's weights are not all finite; nothing exported")
    meta = {"sparseae_family": config.sparsity.penalty, "sparseae_run": str(run.path)}
    if fmt == "saelens":
        cfg, tensors = saelens_cfg(sae, meta), sae.tensors()
    else:
        cfg, tensors = sparsify_files(sae, bool(config.model.unit_norm_decoder))
    cfg_name, weights_name = FILES[fmt]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / weights_name, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    atomic_write_text(out / cfg_name, to_json_text(cfg))
    return sae


# --- a SAELens folder or a sparsify checkpoint -> OneLayerSAE ------------------------------------------

def _read_cfg(folder: Path, fmt: str) -> dict[str, Any]:
    path = folder / FILES[fmt][0]
    if not folder.is_dir():
        raise SparseAEError(f"{folder} is not a folder; name the {fmt} folder that holds {' and '.join(FILES[fmt])}")
    if not path.is_file():
        raise SparseAEError(f"{folder} has no {FILES[fmt][0]}: not a {fmt} folder")
    if path.stat().st_size > MAX_CFG_BYTES:
        raise SparseAEError(f"{path}: {path.stat().st_size} bytes is too large for a {fmt} cfg.json")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError, UnicodeDecodeError) as e:
        raise SparseAEError(f"{path}: not valid JSON ({type(e).__name__})") from None
    if not isinstance(cfg, dict):
        raise SparseAEError(f"{path}: expected a JSON object, got {type(cfg).__name__}")
    return cfg


def _read_tensors(folder: Path, fmt: str) -> dict[str, torch.Tensor]:
    path = folder / FILES[fmt][1]
    if not path.is_file():
        raise SparseAEError(f"{folder} has no {FILES[fmt][1]}: not a {fmt} folder")
    tensors = read_weights(path)
    for name, t in tensors.items():
        if not t.is_floating_point():
            raise SparseAEError(f"{path}: tensor {name} has dtype {t.dtype}, not floating point")
        if not bool(torch.isfinite(t).all()):
            raise SparseAEError(f"{path}: tensor {name} holds values that are not finite")
    return {k: v.float() for k, v in tensors.items()}  # bfloat16 and float16 widen exactly


def _int(cfg: dict[str, Any], key: str, path: Path) -> int:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SparseAEError(f"{path}: {key} must be a positive integer, got {value!r}")
    return value


def _take(tensors: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]], path: Path,
          optional: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The tensors named in `shapes`, each of that shape, and no others (but `optional` ones)."""
    for name, shape in shapes.items():
        if name not in tensors:
            raise SparseAEError(f"{path}: no tensor {name}, which this architecture needs")
        if tuple(tensors[name].shape) != shape:
            raise SparseAEError(f"{path}: {name} has shape {list(tensors[name].shape)}, the cfg.json says "
                                f"{list(shape)}")
    extra = sorted(set(tensors) - set(shapes) - set(optional))
    if extra:
        raise SparseAEError(f"{path}: tensor {extra[0]} is not part of this architecture; another kind of SAE?")
    return {name: tensors[name] for name in shapes}


def _saelens_architecture(cfg: dict[str, Any], path: Path) -> tuple[str, int | None]:
    """(architecture, k) of a SAELens cfg.json, 6.x or older (pre-6: activation_fn 'topk' with its k)."""
    arch = cfg.get("architecture", STANDARD)
    act = cfg.get("activation_fn", cfg.get("activation_fn_str", "relu"))
    if act == TOPK and arch == STANDARD:
        kwargs = cfg.get("activation_fn_kwargs") or {}
        return TOPK, _int(kwargs if isinstance(kwargs, dict) else {}, "k", path)
    if arch not in ARCHITECTURES:
        raise SparseAEError(f"{path}: architecture {arch!r} cannot be imported; sparseae reads SAELens's "
                            f"{', '.join(ARCHITECTURES)} SAEs")
    if act not in ("relu", None):
        raise SparseAEError(f"{path}: activation_fn {act!r} cannot be imported (sparseae reads ReLU SAEs)")
    return arch, (_int(cfg, "k", path) if arch == TOPK else None)


def read_saelens(folder: str | os.PathLike) -> OneLayerSAE:
    """The SAE of a SAELens folder (cfg.json + sae_weights.safetensors), checked; else SparseAEError."""
    folder = Path(folder)
    cfg = _read_cfg(folder, "saelens")
    path = folder / "cfg.json"
    arch, k = _saelens_architecture(cfg, path)
    d_in, d_sae = _int(cfg, "d_in", path), _int(cfg, "d_sae", path)
    for key, ok in (("normalize_activations", ("none", None, False)), ("reshape_activations", ("none", "hook_z"))):
        if cfg.get(key, "none") not in ok:
            raise SparseAEError(f"{path}: {key} {cfg[key]!r} is applied at run time, not stored in the weights; "
                                "fold it into them in SAELens first (e.g. fold_activation_norm_scaling_factor)")
    apply_b_dec = cfg.get("apply_b_dec_to_input", True)
    if not isinstance(apply_b_dec, bool):
        raise SparseAEError(f"{path}: apply_b_dec_to_input must be true or false, got {apply_b_dec!r}")
    tensors = _read_tensors(folder, "saelens")
    scale = tensors.pop("scaling_factor", None)
    if scale is not None and not bool((scale == 1).all()):
        raise SparseAEError(f"{folder}: a fine-tuning scaling_factor other than 1 cannot be imported")
    shapes = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    if arch == JUMPRELU:
        shapes["threshold"] = (d_sae,)
    t = _take(tensors, shapes, folder / FILES["saelens"][1])
    if arch == TOPK and cfg.get("rescale_acts_by_decoder_norm"):
        norms = t["W_dec"].norm(dim=1).clamp_min(1e-8)  # folded in, as SAELens's fold_W_dec_norm does
        t.update(W_enc=t["W_enc"] * norms, b_enc=t["b_enc"] * norms, W_dec=t["W_dec"] / norms[:, None])
    if arch == TOPK and k > d_sae:
        raise SparseAEError(f"{path}: k {k} is larger than d_sae {d_sae}")
    return OneLayerSAE(arch, t["W_enc"], t["b_enc"], t["W_dec"], t["b_dec"], apply_b_dec, k, t.get("threshold"))


def read_sparsify(folder: str | os.PathLike) -> OneLayerSAE:
    """The SAE of an eai-sparsify checkpoint (cfg.json + sae.safetensors), checked; else SparseAEError."""
    folder = Path(folder)
    cfg = _read_cfg(folder, "sparsify")
    path = folder / "cfg.json"
    d_in, k = _int(cfg, "d_in", path), _int(cfg, "k", path)
    n = cfg.get("num_latents") or d_in * _int(cfg, "expansion_factor", path)
    n = _int({"num_latents": n}, "num_latents", path)
    for key in ("skip_connection", "transcode"):
        if cfg.get(key):
            raise SparseAEError(f"{path}: {key} is set; sparseae imports plain sparsify SAEs (no skip connection, "
                                "not a transcoder)")
    if cfg.get("activation", TOPK) != TOPK:
        raise SparseAEError(f"{path}: activation {cfg['activation']!r} cannot be imported (sparseae reads 'topk')")
    if k > n:
        raise SparseAEError(f"{path}: k {k} is larger than the {n} latents")
    shapes = {"encoder.weight": (n, d_in), "encoder.bias": (n,), "W_dec": (n, d_in), "b_dec": (d_in,)}
    t = _take(_read_tensors(folder, "sparsify"), shapes, folder / FILES["sparsify"][1])
    return OneLayerSAE(TOPK, t["encoder.weight"].t().contiguous(), t["encoder.bias"], t["W_dec"], t["b_dec"], True, k)


# --- OneLayerSAE -> a sparseae run folder --------------------------------------------------------------

_CODE = {STANDARD: (families.NONE, families.L1), TOPK: (families.TOPK, families.TOPK),
         JUMPRELU: (families.JUMPRELU, families.JUMPRELU)}


def run_config(sae: OneLayerSAE, train: TrainConfig | None = None) -> RunConfig:
    """The resolved settings of a sparseae model computing `sae`: every training recipe the family would bring
    that changes the function (input gain, b_dec from the data) off; the SAE's own k, pre-bias and code."""
    code, penalty = _CODE[sae.architecture]
    model = {"input_dim": sae.d_in, "hidden": [sae.d_sae], "activation": "relu", "output_activation": "linear",
             "topk": code, "k": sae.k, "pre_bias": sae.apply_b_dec_to_input, "unit_norm_decoder": False,
             "bias_init": "default"}
    if "input_scale" in {f.name for f in fields(ModelConfig)}:
        model["input_scale"] = False  # the SAE reads the rows as they are
    m = ModelConfig(**model)
    return resolve(RunConfig(m, SparsityConfig(penalty=penalty, auxk=False), train or TrainConfig()))


@torch.no_grad()
def sparseae_model(sae: OneLayerSAE, config: RunConfig):
    """The SparseAutoencoder computing `sae`, in eval mode."""
    from ..model import SparseAutoencoder

    model = SparseAutoencoder(config.model)
    t = sae.tensors()
    model.encoder[0].weight.copy_(t["W_enc"].t())
    model.encoder[0].bias.copy_(t["b_enc"])
    model.decoder[0].weight.copy_(t["W_dec"].t())
    model.decoder[0].bias.copy_(t["b_dec"])
    if sae.threshold is not None:
        model.threshold.copy_(t["threshold"])
    return model.eval()


def train_settings(data: str | None, dataset: str | None, data_key: str | None, d_in: int) -> TrainConfig:
    """Where the imported run's `eval`, `report` and `probe` find rows: an array file (its width checked
    against the SAE's d_in), a built-in data set, or, without either, the default (to be set later)."""
    if data is not None:
        from ..data.arrays import open_array

        cols = open_array(data, data_key).n_cols
        if cols != d_in:
            raise SparseAEError(f"--data {data} has {cols} features per row but the SAE reads {d_in}")
        return TrainConfig(dataset="array", data=str(data), data_key=data_key)
    return TrainConfig(dataset=dataset) if dataset is not None else TrainConfig()


def import_folder(src: str | os.PathLike, out: str | os.PathLike, fmt: str = "saelens", *, data: str | None = None,
                  dataset: str | None = None, data_key: str | None = None, if_exists: str = "refuse") -> OneLayerSAE:
    """Write the SAE of a SAELens folder or sparsify checkpoint `src` as the sparseae run folder `out`."""
    if fmt not in FORMATS:
        raise SparseAEError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    sae = read_saelens(src) if fmt == "saelens" else read_sparsify(src)
    config = run_config(sae, train_settings(data, dataset, data_key, sae.d_in))
    model = sparseae_model(sae, config)
    summary = {"imported_from": str(src), "format": fmt, "architecture": sae.architecture, "d_in": sae.d_in,
               "d_sae": sae.d_sae, "k": sae.k, "apply_b_dec_to_input": sae.apply_b_dec_to_input}
    with OutputFolder(out, if_exists, kind="run") as folder:
        run = RunDir(folder.create())
        run.write_config(config)
        run.save_model(model, config)
        atomic_write_json(run.file("summary.json"), summary)
    return sae
