"""MultiScaleMaskedTransformerDecoder: state-dict layout against the reference manifests, the
attention-mask golden case, output shapes and gradients, and the masked cross-attention itself."""
import json
from typing import Dict, List, Tuple

import pytest
import torch
from conftest import REPO, shared_path
from torch.nn import functional as F

from mask2former.modeling.position_encoding import PositionEmbeddingSine
from mask2former.modeling.transformer_decoder import (
    TRANSFORMER_DECODER_REGISTRY,
    MultiScaleMaskedTransformerDecoder,
    build_transformer_decoder,
)
from mask2former.modeling.transformer_decoder.mask2former_transformer_decoder import (
    CrossAttentionLayer,
    compute_attention_mask,
    unblock_fully_masked_rows,
)
from segcommon.engine import setup_cfg

PREFIX = "sem_seg_head.predictor."
COCO_INSTANCE_R50 = "mask2former/coco/instance-segmentation/maskformer2_R50_bs16_50ep"


def _cfg(name: str, *opts: str):
    path = str(REPO / "configs" / f"{name}.yaml")
    return setup_cfg(path, ["MODEL.DEVICE", "cpu", *opts], check_datasets=False)


def _build(cfg) -> MultiScaleMaskedTransformerDecoder:
    return build_transformer_decoder(cfg, cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM, mask_classification=True)


def _small_decoder(**overrides) -> MultiScaleMaskedTransformerDecoder:
    """A narrow decoder (fast on CPU) that exercises the input projection and pre-norm."""
    kwargs = dict(
        in_channels=16,
        num_classes=3,
        hidden_dim=32,
        num_queries=5,
        nheads=4,
        dim_feedforward=64,
        dec_layers=4,  # > 3 levels: the round-robin wraps
        pre_norm=True,
        mask_dim=8,
        enforce_input_project=False,
    )
    kwargs.update(overrides)
    return MultiScaleMaskedTransformerDecoder(**kwargs)


def _features(batch: int, channels: int, mask_dim: int, image_hw: Tuple[int, int]):
    """Random inputs as the pixel decoder gives them: [1/32, 1/16, 1/8] maps and 1/4 mask features."""
    h, w = image_hw
    x = [torch.randn(batch, channels, h // s, w // s) for s in (32, 16, 8)]
    return x, torch.randn(batch, mask_dim, h // 4, w // 4)


@pytest.mark.parametrize(
    "config",
    [
        COCO_INSTANCE_R50,
        "mask2former/ade20k/semantic-segmentation/maskformer2_R50_bs16_160k",
        "mask2former/coco/panoptic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_100ep",
    ],
)
def test_state_dict_matches_reference_manifest(config):
    name = config[len("mask2former/"):].replace("/", "__") + ".json"
    manifest = json.loads(shared_path("reference", "mask2former", name).read_text())
    expected = [(k[len(PREFIX):], list(v)) for k, v in manifest["state_dict"].items() if k.startswith(PREFIX)]

    cfg = _cfg(config)
    decoder = _build(cfg)
    got = [(k, list(v.shape)) for k, v in decoder.state_dict().items()]
    assert got == expected  # keys, shapes and order

    settings = manifest["key_settings"]
    assert decoder.num_queries == settings["num_queries"]
    assert decoder.class_embed.out_features == settings["num_classes"] + 1
    assert decoder.num_layers == settings["dec_layers_cfg"] - 1
    # PyTorch's MHA init leaves the projection biases at zero; the sub-layers' Xavier init keeps them.
    attn = decoder.transformer_cross_attention_layers[0].multihead_attn
    assert not attn.in_proj_bias.any() and not attn.out_proj.bias.any()


def test_attention_mask_rule_golden():
    golden = json.loads(shared_path("reference", "mask2former", "golden_small.json").read_text())
    case = golden["attention_mask_rule"]
    logits = torch.tensor(case["mask_logits_1_4"], dtype=torch.float32)
    expected = torch.tensor(case["attn_mask_true_means_blocked"], dtype=torch.bool)

    blocked = compute_attention_mask(logits, case["target_size"], case["num_heads"])
    got = unblock_fully_masked_rows(blocked)
    assert got.dtype == torch.bool and got.shape == expected.shape
    assert torch.equal(got, expected)
    # The case includes a query whose mask is empty: all blocked before, all allowed after.
    assert blocked.all(-1).any()


def test_forward_shapes_and_gradients():
    torch.manual_seed(0)
    cfg = _cfg(COCO_INSTANCE_R50)
    decoder = _build(cfg)
    num_layers = cfg.MODEL.MASK_FORMER.DEC_LAYERS - 1
    assert len(decoder.transformer_cross_attention_layers) == num_layers

    batch, (h, w) = 2, (64, 96)
    head = cfg.MODEL.SEM_SEG_HEAD
    x, mask_features = _features(batch, head.CONVS_DIM, head.MASK_DIM, (h, w))
    out = decoder(x, mask_features)

    q, k = cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    assert out["pred_logits"].shape == (batch, q, k + 1)
    assert out["pred_masks"].shape == (batch, q, h // 4, w // 4)
    assert len(out["aux_outputs"]) == num_layers
    for aux in out["aux_outputs"]:
        assert set(aux) == {"pred_logits", "pred_masks"}
        assert aux["pred_logits"].shape == (batch, q, k + 1)
        assert aux["pred_masks"].shape == (batch, q, h // 4, w // 4)

    preds = out["aux_outputs"] + [out]
    loss = sum(p["pred_logits"].mean() + p["pred_masks"].mean() for p in preds)
    loss.backward()
    no_grad = [n for n, p in decoder.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []
    names = dict(decoder.named_parameters()).keys()
    assert {"query_feat.weight", "query_embed.weight", "level_embed.weight"} <= names


def test_small_decoder_with_input_projection_and_pre_norm():
    torch.manual_seed(0)
    decoder = _small_decoder()
    sd = decoder.state_dict()
    for lvl in range(3):
        assert sd[f"input_proj.{lvl}.weight"].shape == (32, 16, 1, 1)
        assert sd[f"input_proj.{lvl}.bias"].shape == (32,)

    x, mask_features = _features(2, 16, 8, (64, 64))
    out = decoder(x, mask_features)
    assert out["pred_logits"].shape == (2, 5, 4)
    assert out["pred_masks"].shape == (2, 5, 16, 16)
    assert len(out["aux_outputs"]) == 4
    sum(p["pred_masks"].mean() + p["pred_logits"].mean() for p in out["aux_outputs"] + [out]).backward()
    assert [n for n, p in decoder.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []


def test_layers_attend_round_robin_with_masks_from_previous_prediction():
    """Records what each cross-attention layer receives and checks it against the rule applied to the
    prediction made just before that layer, at the resolution of the level it attends to."""
    torch.manual_seed(0)
    # Train mode returns the intermediate predictions (no dropout in this decoder).
    decoder = _small_decoder(in_channels=32, pre_norm=False).train()  # identity input projection
    x, mask_features = _features(2, 32, 8, (64, 96))
    seen: List[Dict] = []

    def hook(module, args, kwargs):
        seen.append({"memory": args[1], "mask": kwargs["memory_mask"], "pos": kwargs["pos"]})

    for layer in decoder.transformer_cross_attention_layers:
        layer.register_forward_pre_hook(hook, with_kwargs=True)
    with torch.no_grad():
        out = decoder(x, mask_features)

    masks_before_layer = [a["pred_masks"] for a in out["aux_outputs"]]
    pe = PositionEmbeddingSine(16, normalize=True)
    assert len(seen) == decoder.num_layers == 4
    for i, rec in enumerate(seen):
        lvl = i % 3  # 1/32, 1/16, 1/8, 1/32
        h, w = x[lvl].shape[-2:]
        memory = x[lvl].flatten(2).permute(2, 0, 1) + decoder.level_embed.weight[lvl]
        torch.testing.assert_close(rec["memory"], memory)
        torch.testing.assert_close(rec["pos"], pe(x[lvl]).flatten(2).permute(2, 0, 1))
        # Bilinear resize to the level, probability < 0.5 blocked, rows for image b, head m at b*M+m.
        a = F.interpolate(masks_before_layer[i], size=(h, w), mode="bilinear", align_corners=False)
        blocked = (a.sigmoid() < 0.5).flatten(2)  # (B, Q, h*w)
        expected = torch.stack([blocked[b] for b in range(2) for _ in range(decoder.num_heads)])
        expected[expected.all(-1)] = False
        assert torch.equal(rec["mask"], expected)


def _record_attention_masks(decoder, x, mask_features):
    masks: List[torch.Tensor] = []
    hooks = [
        layer.register_forward_pre_hook(lambda m, a, kw: masks.append(kw["memory_mask"]), with_kwargs=True)
        for layer in decoder.transformer_cross_attention_layers
    ]
    with torch.no_grad():
        out = decoder(x, mask_features)
    for h in hooks:
        h.remove()
    return out, masks


@pytest.mark.parametrize("name", ["small", "coco-instance-r50"])
def test_eval_mode_computes_the_same_attention_masks_at_low_resolution(name):
    """Eval mode resizes the mask features to each level instead of resizing 1/4-resolution mask
    logits: the attention masks every layer receives and the final predictions are those of the
    full computation (train mode; these decoders have no dropout), and no intermediate masks are
    returned."""
    torch.manual_seed(0)
    if name == "small":
        decoder = _small_decoder(in_channels=32, pre_norm=False)
        x, mask_features = _features(2, 32, 8, (64, 96))
    else:
        decoder = _build(_cfg(COCO_INSTANCE_R50))
        x, mask_features = _features(1, 256, 256, (160, 224))
    full, full_masks = _record_attention_masks(decoder.train(), x, mask_features)
    fast, fast_masks = _record_attention_masks(decoder.eval(), x, mask_features)

    assert len(full_masks) == len(fast_masks) == decoder.num_layers
    for a, b in zip(full_masks, fast_masks):
        assert a.shape == b.shape and a.dtype == b.dtype == torch.bool
        # Equal up to logits within float rounding of 0; this input has none.
        assert torch.equal(a, b)
    torch.testing.assert_close(fast["pred_logits"], full["pred_logits"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast["pred_masks"], full["pred_masks"], rtol=1e-5, atol=1e-4)
    assert len(full["aux_outputs"]) == decoder.num_layers and fast["aux_outputs"] == []


@pytest.mark.parametrize("per_head", [False, True], ids=["same-key-all-heads", "one-key-per-head"])
def test_masked_cross_attention_reads_only_the_allowed_key(per_head):
    """With every key but one blocked, softmax puts weight 1 on it, so the attention output is the
    output projection of that key's value projection, whatever the queries and positions."""
    torch.manual_seed(0)
    decoder = _small_decoder(pre_norm=False)
    layer: CrossAttentionLayer = decoder.transformer_cross_attention_layers[0]
    attn = layer.multihead_attn
    c, m = attn.embed_dim, attn.num_heads
    d = c // m
    q_len, s_len, batch = 3, 7, 2
    tgt, query_pos = torch.randn(q_len, batch, c), torch.randn(q_len, batch, c)
    memory, pos = torch.randn(s_len, batch, c), torch.randn(s_len, batch, c)

    allowed = torch.randint(s_len, (batch, q_len, m if per_head else 1)).expand(batch, q_len, m)
    attn_mask = torch.ones(batch * m, q_len, s_len, dtype=torch.bool)
    for b in range(batch):
        for h in range(m):
            for q in range(q_len):
                attn_mask[b * m + h, q, allowed[b, q, h]] = False

    # Value projection: rows [2C, 3C) of the packed in-projection, computed without the module.
    w_v, b_v = attn.in_proj_weight[2 * c:], attn.in_proj_bias[2 * c:]
    values = memory @ w_v.T + b_v  # (S, B, C)
    head_outputs = torch.empty(q_len, batch, c)
    for b in range(batch):
        for q in range(q_len):
            for h in range(m):
                head_outputs[q, b, h * d:(h + 1) * d] = values[allowed[b, q, h], b, h * d:(h + 1) * d]
    expected_attn = head_outputs @ attn.out_proj.weight.T + attn.out_proj.bias

    with torch.no_grad():
        got_attn = attn(tgt + query_pos, memory + pos, memory, attn_mask=attn_mask)[0]
        got_layer = layer(tgt, memory, memory_mask=attn_mask, pos=pos, query_pos=query_pos)
        torch.testing.assert_close(got_attn, expected_attn, rtol=1e-5, atol=1e-5)
        # Post-norm sub-layer: residual then LayerNorm.
        torch.testing.assert_close(got_layer, layer.norm(tgt + expected_attn), rtol=1e-5, atol=1e-5)
        if not per_head:
            # Same key for all heads: the output is exactly out_proj(value of that key).
            j = allowed[0, 0, 0]
            torch.testing.assert_close(got_attn[0, 0], attn.out_proj(values[j, 0]), rtol=1e-5, atol=1e-5)


def test_dec_layers_counts_prediction_sets():
    cfg = _cfg(COCO_INSTANCE_R50, "MODEL.MASK_FORMER.DEC_LAYERS", "1")
    decoder = _build(cfg)
    assert decoder.num_layers == 0 and len(decoder.transformer_ffn_layers) == 0
    x, mask_features = _features(1, 256, 256, (64, 64))
    with torch.no_grad():
        out = decoder(x, mask_features)
    assert out["aux_outputs"] == [] and out["pred_masks"].shape == (1, 100, 16, 16)

    cfg = _cfg(COCO_INSTANCE_R50, "MODEL.MASK_FORMER.DEC_LAYERS", "0")
    with pytest.raises(ValueError, match="DEC_LAYERS"):
        _build(cfg)


def test_no_deep_supervision_gives_no_aux_outputs():
    decoder = _small_decoder(deep_supervision=False)
    x, mask_features = _features(1, 16, 8, (64, 64))
    with torch.no_grad():
        out = decoder(x, mask_features)
    assert out["aux_outputs"] == [] and out["pred_logits"].shape == (1, 5, 4)


def test_registry_and_unknown_name():
    registered = TRANSFORMER_DECODER_REGISTRY.get("MultiScaleMaskedTransformerDecoder")
    assert registered is MultiScaleMaskedTransformerDecoder
    cfg = _cfg(COCO_INSTANCE_R50, "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME", "NoSuchDecoder")
    with pytest.raises(KeyError, match="MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME.*NoSuchDecoder"):
        _build(cfg)


def test_legacy_static_query_key_loads_into_query_feat():
    torch.manual_seed(0)
    src = _small_decoder()
    # A plain dict (no version metadata), as a pickled checkpoint gives it.
    state = {
        ("static_query" + k[len("query_feat"):] if k.startswith("query_feat") else k): v
        for k, v in src.state_dict().items()
    }
    assert "static_query.weight" in state
    dst = _small_decoder()
    dst.load_state_dict(state, strict=True)
    assert torch.equal(dst.query_feat.weight, src.query_feat.weight)
    # A current plain-dict checkpoint loads unchanged.
    dst2 = _small_decoder()
    dst2.load_state_dict(dict(src.state_dict()), strict=True)
    assert torch.equal(dst2.query_embed.weight, src.query_embed.weight)
