#!/usr/bin/env python3
"""Checks a spectune PEFT export (DESIGN.md §4 "PEFT export") with numpy + safetensors alone.

Usage: check_peft.py DIR, where DIR holds
  peft/adapter_config.json        the exported LoraConfig
  peft/adapter_model.safetensors  keys base_model.model.<module>.lora_A.weight / .lora_B.weight
  base.safetensors                keys <module>.weight: the base model's weights W (out × in)
  merged.safetensors              keys <module>.weight: spectune's merged weights W'

It applies the adapter exactly as stock Hugging Face PEFT does for an nn.Linear (LoRA, no
rsLoRA, no DoRA, fan_in_fan_out false): W_new = W + (lora_alpha / r) · B @ A, on every module
that config["target_modules"] selects by PEFT's own matching rule, and compares W_new with W'.
Prints one line per module and a summary; exits 1 on any mismatch or malformed export.
"""

import json
import math
import os
import re
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

# Relative Frobenius error allowed between W + (α/r)·B A and spectune's merged W'. The factors
# are stored as f32 (each entry ~6e-8 relative off its f64 value) and W' is computed in f32 on
# the GPU, so an exact export agrees to ~1e-7 relative; 1e-5 leaves two orders of magnitude
# for rounding while any wrong sign, transpose, scaling or missing term is O(1) off.
REL_TOL = 1e-5

# Fields of PEFT's PeftConfig + LoraConfig. Older PEFT versions raise TypeError on any other
# key in adapter_config.json (newer ones drop it with a warning), so an export must not write one.
LORA_CONFIG_FIELDS = {
    # PeftConfig / PeftConfigMixin
    "peft_type", "task_type", "inference_mode", "base_model_name_or_path", "revision",
    "auto_mapping", "peft_version",
    # LoraConfig
    "r", "target_modules", "exclude_modules", "lora_alpha", "lora_dropout", "fan_in_fan_out",
    "bias", "use_rslora", "modules_to_save", "init_lora_weights", "layers_to_transform",
    "layers_pattern", "rank_pattern", "alpha_pattern", "megatron_config", "megatron_core",
    "loftq_config", "use_dora", "layer_replication", "runtime_config", "lora_bias",
    "eva_config", "corda_config", "trainable_token_indices", "target_parameters",
}


class Invalid(Exception):
    """The export cannot be what stock PEFT loads as a plain LoRA."""


def is_target(target_modules, module):
    """PEFT's check_target_module_exists for a list or a regex string (no layers_to_transform)."""
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, module) is not None
    return any(module == t or module.endswith("." + t) for t in target_modules)


def check_config(config):
    unknown = sorted(set(config) - LORA_CONFIG_FIELDS)
    if unknown:
        raise Invalid(f"adapter_config.json has keys that are no LoraConfig field: {unknown}")
    if config.get("peft_type") != "LORA":
        raise Invalid(f"peft_type is {config.get('peft_type')!r}, expected 'LORA'")
    r = config.get("r")
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        raise Invalid(f"r must be a positive integer, got {r!r}")
    alpha = config.get("lora_alpha")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not math.isfinite(alpha):
        raise Invalid(f"lora_alpha must be a finite number, got {alpha!r}")
    # Anything that would make stock PEFT apply something other than W + (α/r)·B A.
    for key in ("use_rslora", "use_dora", "fan_in_fan_out"):
        if config.get(key, False):
            raise Invalid(f"{key} is set; the export must be a plain LoRA")
    if config.get("bias", "none") != "none":
        raise Invalid(f"bias is {config.get('bias')!r}, expected 'none' (no bias tensors are exported)")
    for key in ("rank_pattern", "alpha_pattern"):
        if config.get(key):
            raise Invalid(f"{key} is not empty: {config[key]!r}")
    for key in ("layers_to_transform", "layers_pattern", "exclude_modules", "modules_to_save",
                "layer_replication"):
        if config.get(key) not in (None, [], {}):
            raise Invalid(f"{key} is set ({config[key]!r}); the export should not use it")
    targets = config.get("target_modules")
    if not (isinstance(targets, str) or
            (isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets))):
        raise Invalid(f"target_modules must be a non-empty list of names or a regex, got {targets!r}")
    return r, float(alpha), targets


def as_f64(name, tensor, shape):
    if tensor.dtype != np.float32:
        raise Invalid(f"{name} is {tensor.dtype}, expected float32")
    if tensor.shape != shape:
        raise Invalid(f"{name} has shape {tensor.shape}, expected {shape}")
    if not np.all(np.isfinite(tensor)):
        raise Invalid(f"{name} has non-finite values")
    return tensor.astype(np.float64)


def check(directory):
    peft_dir = os.path.join(directory, "peft")
    with open(os.path.join(peft_dir, "adapter_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    r, alpha, targets = check_config(config)
    scaling = alpha / r  # PEFT LoraLayer.update_layer without rsLoRA
    weights_path = os.path.join(peft_dir, "adapter_model.safetensors")
    weights = load_file(weights_path)
    with safe_open(weights_path, framework="np") as f:
        metadata = f.metadata() or {}
    base = load_file(os.path.join(directory, "base.safetensors"))
    merged = load_file(os.path.join(directory, "merged.safetensors"))
    print(f"config: peft_type=LORA r={r} lora_alpha={alpha:g} scaling={scaling:g} "
          f"targets={targets} metadata={metadata}")

    if set(base) != set(merged):
        raise Invalid(f"base and merged hold different keys: {sorted(set(base) ^ set(merged))}")
    if not all(k.endswith(".weight") for k in base):
        raise Invalid(f"base keys must all be <module>.weight: {sorted(base)}")
    modules = sorted(k[: -len(".weight")] for k in base)
    adapted = [m for m in modules if is_target(targets, m)]
    if not adapted:
        raise Invalid(f"target_modules {targets!r} match no module of the base ({modules})")
    if isinstance(targets, list):
        unmatched = [t for t in targets if not any(is_target([t], m) for m in modules)]
        if unmatched:
            raise Invalid(f"target_modules {unmatched} match no module of the base")

    prefix = "base_model.model."
    expected_keys = {f"{prefix}{m}.lora_{ab}.weight" for m in adapted for ab in "AB"}
    if set(weights) != expected_keys:
        missing = sorted(expected_keys - set(weights))
        extra = sorted(set(weights) - expected_keys)
        raise Invalid(f"adapter keys are wrong: missing {missing}, unexpected {extra}")

    worst = 0.0
    failed = []
    for module in modules:
        key = f"{module}.weight"
        w = base[key]
        if w.ndim != 2:
            raise Invalid(f"{key} has shape {w.shape}; only 2-D nn.Linear weights are checked")
        m, n = w.shape
        w = as_f64(f"base {key}", w, (m, n))
        got = as_f64(f"merged {key}", merged[key], (m, n))
        if module in adapted:
            a = as_f64(f"{prefix}{module}.lora_A.weight", weights[f"{prefix}{module}.lora_A.weight"], (r, n))
            b = as_f64(f"{prefix}{module}.lora_B.weight", weights[f"{prefix}{module}.lora_B.weight"], (m, r))
            want = w + scaling * (b @ a)
        else:
            want = w
        diff = got - want
        max_abs = float(np.max(np.abs(diff)))
        rel = float(np.linalg.norm(diff) / max(np.linalg.norm(want), np.finfo(np.float64).tiny))
        delta_rel = float(np.linalg.norm(want - w) / max(np.linalg.norm(w), np.finfo(np.float64).tiny))
        ok = rel <= REL_TOL
        worst = max(worst, rel)
        if not ok:
            failed.append(module)
        print(f"{'ok  ' if ok else 'FAIL'} {module} ({m}x{n}): max abs err {max_abs:.3e}, "
              f"rel Frobenius err {rel:.3e} (|ΔW|/|W| = {delta_rel:.3e})")
    return len(modules), failed, worst


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    try:
        count, failed, worst = check(argv[1])
    except (Invalid, OSError, ValueError, KeyError) as e:
        print(f"FAILED: {type(e).__name__}: {e}")
        return 1
    if failed:
        print(f"FAILED: {len(failed)} of {count} modules off by more than {REL_TOL:g} "
              f"(rel Frobenius): {failed}; worst {worst:.3e}")
        return 1
    print(f"PASSED: {count} modules match W + (lora_alpha/r)·B A within {REL_TOL:g} "
          f"(worst rel Frobenius err {worst:.3e})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
