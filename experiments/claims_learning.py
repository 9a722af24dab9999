"""The claims of docs/learning.md (the study), registered into `claims.CLAIMS` (see claims.py and claims_list.py)."""

from __future__ import annotations

import math

import learning_report
from claims import RESULTS, Missing, Row, against_row, claim, diff_row

JETLEY = "Jetley et al., ICLR 2018"
XU = "Xu et al., ICML 2015"
OURS = "ours"


# -- docs/learning.md --------------------------------------------------------------------------------------------

DARCET = "Darcet et al., ICLR 2024"


def _study(job: str) -> dict[int, dict]:
    import learning_report

    found = {r["seed"]: r for r in learning_report.records(job, RESULTS / "learning")}
    if not found:
        raise Missing(f"learning/{job.replace('/', '-')}-s*.json")
    return found


def _lags(job: str, key: str, reference: str = "test_acc", falling: bool | None = None,
          to: str = "final") -> dict[int, float]:
    out = {s: learning_report.lag(r, key, reference, falling, to) for s, r in _study(job).items()}
    out = {s: v for s, v in out.items() if not math.isnan(v)}
    if not out:
        raise Missing(f"a defined half-rise of {key} in {job}")
    return out


def _final(job: str, key: str, at: int = -1) -> dict[int, float]:
    """`key` at snapshot `at` (the last by default; 0: at initialisation) of each seed where it is defined."""
    return {s: float(r["series"][at][key]) for s, r in _study(job).items() if r["series"][at].get(key) is not None}


def _lag_row(text: str, job: str, key: str, reference: str = "test_acc", paper: str = "the question of the seed",
             falling: bool | None = None, to: str = "final") -> Row:
    return against_row(text, paper, _lags(job, key, reference, falling, to), 0.0, sign=0, what="lag (epochs)",
                       chance="no lag", digits=2)


@claim("learning")
def learning_vit_attention() -> Row:
    """ViT raw attention becomes faithful with accuracy"""
    return _lag_row("TinyViT: raw attention's correlation with blank-out rises with held-out accuracy (half-rise lag)",
                    "vit-r0/clutter", "attention/blankout_rho")


@claim("learning")
def learning_vit_rollout() -> Row:
    """ViT rollout becomes faithful with accuracy"""
    return _lag_row("TinyViT: rollout's correlation with blank-out rises with accuracy", "vit-r0/clutter",
                    "rollout/blankout_rho")


@claim("learning")
def learning_vit_gradcam() -> Row:
    """ViT Grad-CAM (post-hoc) becomes faithful with accuracy"""
    return _lag_row("TinyViT: Grad-CAM's (post-hoc) correlation with blank-out rises with accuracy",
                    "vit-r0/clutter", "gradcam/blankout_rho")


@claim("learning")
def learning_ltpa_own() -> Row:
    """LTPA's own attention becomes faithful with accuracy"""
    return _lag_row("LTPA: its own attention's correlation with blank-out rises with accuracy", "ltpa/clutter",
                    "ltpa/blankout_rho")


@claim("learning")
def learning_ltpa_gradcam() -> Row:
    """LTPA's Grad-CAM becomes faithful with accuracy"""
    return _lag_row("LTPA: Grad-CAM's (post-hoc) correlation with blank-out rises with accuracy", "ltpa/clutter",
                    "gradcam/blankout_rho")


@claim("learning")
def learning_ltpa_used() -> Row:
    """LTPA uses its own attention"""
    return against_row("LTPA uses where it attends: uniform attention lowers the true logit (end of training)",
                       OURS + " (test: Wiegreffe & Pinter, EMNLP 2019)", _final("ltpa/clutter", "own/gap@uniform"), 0.0,
                       what="logit drop", chance="zero")


@claim("learning")
def learning_ltpa_own_vs_posthoc() -> Row:
    """LTPA's own attention is more faithful than Grad-CAM at the end"""
    return diff_row("At the end, LTPA's own attention follows blank-out more closely than Grad-CAM on the same "
                    "model", JETLEY, _final("ltpa/clutter", "ltpa/blankout_rho"),
                    _final("ltpa/clutter", "gradcam/blankout_rho"), what="ρ, own − Grad-CAM")


@claim("learning")
def learning_decoy_cnn() -> Row:
    """The shortcut shows in Grad-CAM when it shows in the model"""
    return _lag_row("Decoy, CNN: Grad-CAM turns to the patch when the patch becomes the part the model needs most "
                    "(half-rise to the peak of Grad-CAM's pointing on the patch − that of the share of probe images "
                    "whose most needed part is the patch)", "cnn/decoy", "gradcam/pointing@decoy",
                    reference="parts/top@decoy", to="peak")


@claim("learning")
def learning_decoy_ltpa() -> Row:
    """The shortcut shows in LTPA's own attention when it shows in the model"""
    return _lag_row("Decoy, LTPA: its own attention turns to the patch when the patch becomes the part it needs most",
                    "ltpa/decoy", "ltpa/pointing@decoy", reference="parts/top@decoy", to="peak")


@claim("learning")
def learning_decoy_accuracy() -> Row:
    """The patch becomes causal with training accuracy"""
    return _lag_row("Decoy, CNN: the patch becomes the part the model needs most as its training (probe) accuracy "
                    "rises", "cnn/decoy", "parts/top@decoy", reference="probe_acc", to="peak")


@claim("learning")
def learning_sinks_norms() -> Row:
    """Without registers more patch tokens have outlying norms"""
    return diff_row("Without registers more patch tokens have outlying norms (> 2 × median) at the end",
                    DARCET, _final("vit-r0/clutter", "sinks/norm_outliers"),
                    _final("vit-r4/clutter", "sinks/norm_outliers"), digits=3, what="share, 0 − 4 registers")


@claim("learning")
def learning_sinks_background() -> Row:
    """Without registers the CLS token attends more to background patches"""
    return diff_row("Without registers the CLS token puts more attention on background patches (last layer)",
                    DARCET, _final("vit-r0/clutter", "sinks/background_share"),
                    _final("vit-r4/clutter", "sinks/background_share"), what="share, 0 − 4 registers")


@claim("learning")
def learning_registers_accuracy() -> Row:
    """Registers do not change accuracy"""
    return diff_row("Registers leave held-out accuracy unchanged", DARCET, _final("vit-r0/clutter", "test_acc"),
                    _final("vit-r4/clutter", "test_acc"), sign=0, digits=3, what="accuracy, 0 − 4 registers")


@claim("learning")
def learning_sat_uses() -> Row:
    """SAT's decoder does not use its attention during training"""
    return against_row("SAT (soft, unsupervised): uniform α costs the decoder nothing, at the end of training",
                       f"{OURS} (model: {XU}; test: Wiegreffe & Pinter, EMNLP 2019)",
                       _final("sat/scenes", "uniform_gap"), 0.0, sign=0, digits=3, what="NLL gap (nats/word)",
                       chance="zero")


@claim("learning")
def learning_sat_need_lag() -> Row:
    """SAT's words come to need their object with (or after) word accuracy"""
    return _lag_row("SAT: the words' need of the object they name (log p drop on its removal) rises with "
                    "object-word accuracy (half-rise lag)", "sat/scenes", "named_drop", reference="word_acc")


@claim("learning")
def learning_sat_grounds() -> Row:
    """SAT's attention comes to point at the object a word names"""
    return diff_row("SAT: α's arg-max lies in the named object's box more often at the end of training than at "
                    "initialisation", XU + " (attention aligned with the words)", _final("sat/scenes", "grounding_ref"),
                    _final("sat/scenes", "grounding_ref", at=0), digits=3, what="grounding, end − start")


@claim("learning")
def learning_sat_named() -> Row:
    """SAT's words need the object they name"""
    return against_row("SAT: removing the named object lowers the word's probability (the causal reference exists)",
                       OURS, _final("sat/scenes", "named_drop"), 0.0, digits=3, what="log p drop (nats)",
                       chance="zero")
