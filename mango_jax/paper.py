"""The paper's numbers (its Tables 1-8, section 4 and appendix), copied from its text.

One home for them: `experiments.report` prints them beside our runs and `experiments.bench`
beside its measurements. `None` stands for the paper's '-'. Segmentation triples are
(pixel acc., mean acc., mIoU) in percent.

Table 2 did not survive in the text we have: only its layout (five settings of TokenFusion's
protocol, FID / KID on RGB targets, MAE / MSE on the others) and two differences stated in the
prose (`TABLE2_FID_GAP`) are known.
"""

from __future__ import annotations

from typing import NamedTuple

Seg = tuple[float | None, float | None, float | None]

SEG_DATASETS = ("nyudv2", "sunrgbd")  # Tables 1, 4-6 and 8
FULL_PARTITIONS = frozenset({"mmca", "imca", "lica"})
# The configuration of MANGO's main results; each ablation table varies one of these.
MAIN_CONFIG = {"flow_layer": "mango", "num_blocks": 12, "partitions": FULL_PARTITIONS,
               "latent_model": True}


class Table1Row(NamedTuple):
    group: str
    method: str
    inputs: str
    family: str  # the method's fusion registry name (`mango_jax.fusion.NAMES`) where we have it
    variant: str | None  # picks one of several rows of a family (backbone size)
    nyudv2: Seg
    sunrgbd: Seg


# The paper's short names of the datasets' modalities (its "Inputs" / "Modality" columns).
INPUTS = {"rgb": "RGB", "depth": "D", "image": "I", "text": "T", "word2vec": "T"}

_CNN, _TRANSFORMER = "CNN-based models", "Transformer-based models"
_NONE = (None, None, None)

TABLE1 = (  # RGB-D semantic segmentation on NYUDv2 and SUN RGB-D.
    Table1Row(_CNN, "FCN-32s [30]", "RGB", "fcn32s", None, (60.0, 42.2, 29.2), (68.4, 41.1, 29.0)),
    Table1Row(_CNN, "RefineNet [26]", "RGB", "refinenet", None, (74.4, 59.6, 47.6),
              (81.1, 57.7, 47.0)),
    Table1Row(_CNN, "FuseNet [13]", "RGB+D", "fusenet", None, (68.1, 50.4, 37.9),
              (76.3, 48.3, 37.3)),
    Table1Row(_CNN, "SSMA [62]", "RGB+D", "ssma", None, (75.2, 60.5, 48.7), (81.0, 58.1, 45.7)),
    Table1Row(_CNN, "RDFNet [39]", "RGB+D", "rdfnet", None, (76.0, 62.8, 50.1),
              (81.5, 60.1, 47.7)),
    Table1Row(_CNN, "AsymFusion [67]", "RGB+D", "asymfusion", None, (77.0, 64.0, 51.2), _NONE),
    Table1Row(_CNN, "CEN [66]", "RGB+D", "cen", None, (77.7, 65.0, 52.5), (83.5, 63.2, 51.1)),
    Table1Row(_TRANSFORMER, "DPLNet [6]", "RGB+D", "dplnet", None, (None, None, 59.3),
              (None, None, 52.8)),
    Table1Row(_TRANSFORMER, "DFormer [71]", "RGB+D", "dformer", None, (None, None, 57.2),
              (None, None, 52.5)),
    Table1Row(_TRANSFORMER, "EMSANet [44]", "RGB+D", "emsanet", None, (None, None, 59.0),
              (None, None, 50.9)),
    Table1Row(_TRANSFORMER, "W/O Fusion (Tiny) [65]", "RGB", "unimodal", "tiny",
              (75.2, 62.5, 49.7), (82.3, 60.6, 47.0)),
    Table1Row(_TRANSFORMER, "Feature Concat (Tiny) [65]", "RGB+D", "concat", "tiny",
              (76.5, 63.4, 50.8), (82.8, 61.4, 47.9)),
    Table1Row(_TRANSFORMER, "TokenFusion (Tiny) [65]", "RGB+D", "tokenfusion", "tiny",
              (78.6, 66.2, 53.3), (84.0, 63.3, 51.4)),
    Table1Row(_TRANSFORMER, "W/O fusion (Small) [65]", "RGB", "unimodal", "small",
              (76.0, 63.0, 50.6), (82.9, 61.3, 48.1)),
    Table1Row(_TRANSFORMER, "Feature Concat (Small) [65]", "RGB+D", "concat", "small",
              (77.1, 63.8, 51.4), (83.5, 62.0, 49.0)),
    Table1Row(_TRANSFORMER, "TokenFusion (Small) [65]", "RGB+D", "tokenfusion", "small",
              (79.0, 66.9, 54.2), (84.7, 64.1, 53.0)),
    Table1Row(_TRANSFORMER, "GeminiFusion (MiT-B5) [20]", "RGB+D", "geminifusion", None,
              (80.3, 70.4, 57.7), (83.8, 65.3, 53.3)),
    Table1Row(_TRANSFORMER, "MANGO", "RGB+D", "mango", None, (81.5, 71.6, 59.2),
              (83.9, 67.2, 54.1)),
)


class Table2Task(NamedTuple):
    label: str
    sources: frozenset[str]  # the paper's domain names (`TASKONOMY_NAMES`' values)
    target: str
    metrics: tuple[str, ...]


# The paper's name of each Taskonomy domain (`mango_jax.data.taskonomy.DOMAINS`) it uses.
TASKONOMY_NAMES = {"rgb": "RGB", "reshading": "Shade", "edge_texture": "Texture",
                   "edge_occlusion": "Edge", "normal": "Normal", "depth_euclidean": "Depth",
                   "depth_zbuffer": "Depth"}

TABLE2 = (  # Image-to-image translation on Taskonomy: TokenFusion's five settings.
    Table2Task("Shade+Texture → RGB", frozenset({"Shade", "Texture"}), "RGB", ("fid", "kid")),
    Table2Task("Depth+Normal → RGB", frozenset({"Depth", "Normal"}), "RGB", ("fid", "kid")),
    Table2Task("RGB+Shade → Normal", frozenset({"RGB", "Shade"}), "Normal", ("mae", "mse")),
    Table2Task("RGB+Normal → Shade", frozenset({"RGB", "Normal"}), "Shade", ("mae", "mse")),
    Table2Task("RGB+Edge → Depth", frozenset({"RGB", "Edge"}), "Depth", ("mae", "mse")),
)
TABLE2_METHODS = (("TokenFusion [65]", "tokenfusion"), ("GeminiFusion [20]", "geminifusion"),
                  ("MANGO", "mango"))
# Stated in the text: MANGO's FID is this much lower than GeminiFusion's.
TABLE2_FID_GAP = {"Shade+Texture → RGB": -1.71, "Depth+Normal → RGB": -29.37}


class Table3Row(NamedTuple):
    method: str
    modality: str
    family: str
    variant: str | None  # a unimodal row's modality (`INPUTS`)
    micro_f1: float
    macro_f1: float


TABLE3 = (  # Movie-genre classification on MM-IMDB (%).
    Table3Row("Image Network [70]", "I", "unimodal", "I", 40.0, 25.3),
    Table3Row("Text Network [70]", "T", "unimodal", "T", 59.2, 47.2),
    Table3Row("Late Fusion [24]", "I+T", "late", None, 59.6, 51.0),
    Table3Row("LRTF [29]", "I+T", "lrtf", None, 59.2, 49.3),
    Table3Row("MI-Matrix [19]", "I+T", "mi_matrix", None, 58.5, 48.4),
    Table3Row("DynMM [70]", "I+T", "dynmm", None, 60.4, 51.6),
    Table3Row("COCA [74]", "I+T", "coca", None, 67.7, 62.6),
    Table3Row("MFM [3]", "I+T", "mfm", None, 67.5, 61.6),
    Table3Row("BLIP [22]", "I+T", "blip", None, 67.4, 62.8),
    Table3Row("ReFNet [43]", "I+T", "refnet", None, 68.0, 58.7),
    Table3Row("BridgeTower [69]", "I+T", "bridgetower", None, 68.2, 63.3),
    Table3Row("MANGO", "I+T", "mango", None, 71.7, 68.2),
)


class Table4Row(NamedTuple):
    layer: str
    flow_layer: str  # `flow.layer`
    nyudv2: Seg
    sunrgbd: Seg


TABLE4 = (  # The invertible layer of G.
    Table4Row("Coupling Layer (RealNVP) [5]", "realnvp", (76.0, 63.4, 50.8), (79.8, 59.9, 48.5)),
    Table4Row("Glow [21]", "glow", (77.0, 66.4, 53.0), (80.3, 61.9, 49.1)),
    Table4Row("Flow++ [15]", "flowpp", (77.5, 68.1, 54.2), (81.5, 62.0, 50.5)),
    Table4Row("AttnFlow [48]", "attnflow", (79.5, 69.9, 56.5), (82.5, 65.1, 52.2)),
    Table4Row("MANGO (ICA)", "mango", (81.5, 71.6, 59.2), (83.9, 67.2, 54.1)),
)


class Table5Row(NamedTuple):
    partitions: frozenset[str]
    nyudv2: Seg
    sunrgbd: Seg


TABLE5 = (  # The partition methods.
    Table5Row(frozenset({"mmca"}), (79.3, 68.8, 56.4), (82.4, 64.6, 51.3)),
    Table5Row(frozenset({"mmca", "imca"}), (80.2, 70.8, 58.0), (83.3, 66.2, 53.7)),
    Table5Row(FULL_PARTITIONS, (81.5, 71.6, 59.2), (83.9, 67.2, 54.1)),
)


class Table6Row(NamedTuple):
    blocks: int
    latent_model: bool
    nyudv2: Seg
    sunrgbd: Seg


TABLE6 = (  # Blocks × latent model, with the 16-block row of appendix Table 7.
    Table6Row(6, False, (75.9, 63.5, 51.0), (79.4, 59.1, 47.3)),
    Table6Row(6, True, (77.5, 65.8, 52.3), (79.6, 60.5, 48.1)),
    Table6Row(8, False, (78.0, 65.5, 53.1), (80.8, 60.8, 49.4)),
    Table6Row(8, True, (78.1, 65.3, 54.1), (84.4, 60.0, 51.4)),
    Table6Row(12, False, (80.7, 70.4, 58.0), (83.4, 65.8, 53.5)),
    Table6Row(12, True, (81.5, 71.6, 59.2), (83.9, 67.2, 54.1)),
    Table6Row(16, True, (83.1, 75.1, 61.7), (85.4, 68.7, 55.6)),
)


class Table8Row(NamedTuple):
    method: str
    family: str
    nyudv2_miou: float
    sunrgbd_miou: float
    params_m: float
    gflops: float
    inference_ms: float


TABLE8 = (  # Appendix: computational cost on NYUDv2 (256 × 256 inputs).
    Table8Row("TokenFusion [65]", "tokenfusion", 54.2, 53.0, 45.9, 108, 126),
    Table8Row("GeminiFusion [20]", "geminifusion", 57.7, 53.3, 75.8, 174, 153),
    Table8Row("MANGO", "mango", 59.2, 54.1, 72.9, 152, 144),
)


def table8_cost(family: str) -> Table8Row:
    """Table 8's row of a fusion family ('mango', 'geminifusion', 'tokenfusion')."""
    return next(r for r in TABLE8 if r.family == family)


def table8_costs() -> dict[str, dict[str, float]]:
    """Table 8's cost columns by method name (MANGO, GeminiFusion, TokenFusion), as the bench
    writes them beside its own measurements."""
    return {row.method.split(" [")[0]: {"params_m": row.params_m, "gflops": float(row.gflops),
                                        "inference_ms": float(row.inference_ms)}
            for row in TABLE8}
