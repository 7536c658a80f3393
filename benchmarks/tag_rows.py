"""Are a model's tool-call tags trained tokens? Their rows in the input embedding and the output layer, compared.

    python benchmarks/tag_rows.py --help
    python benchmarks/tag_rows.py --model qwen2.5-coder-0.5b
    python benchmarks/tag_rows.py --model qwen2.5-coder-0.5b --adapter runs/tool_warmup_qwen/adapter

For each tool-call tag that is one token of the model's vocabulary (``sqlenv.prompts.TOOL_CALL_TAGS``:
Qwen2.5's ``<tool_call>`` and ``</tool_call>``), and for each of the two layers that hold a row per token,
prints the row's norm, its twins (the other tokens whose row points the same way, cosine >= ``--twin-cosine``)
and the nearest token that is not a twin. A row with twins is one pre-training never moved: the model scores
the tag and its twins alike, whatever its hidden state, so no adapter of the attention or MLP layers alone
can make it write the tag (``agents/tool_warmup.py`` trains these rows; ``--no-train-tool-tags`` does not).
With ``--adapter`` the adapter is merged first, so the figures are the ones the tuned model uses.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python benchmarks/tag_rows.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b",
                        help="an agents.models name or a local model folder")
    parser.add_argument("--adapter", default=None, help="a PEFT adapter folder, merged into the model first")
    parser.add_argument("--twin-cosine", type=float, default=0.9999,
                        help="rows at least this close (cosine) count as twins")
    parser.add_argument("--show", type=int, default=4, help="twins named per row (all are counted)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    return parser


def row_report(weight, token_id: int, tokenizer, twin_cosine: float, show: int) -> dict:
    """``token_id``'s row in ``weight`` (vocabulary x hidden): norm, twins, nearest non-twin."""
    import torch

    cosine = torch.nn.functional.cosine_similarity(weight[token_id][None].float(), weight.float(), dim=1)
    cosine[token_id] = -2.0
    twins = torch.nonzero(cosine >= twin_cosine).flatten().tolist()
    others = cosine.clone()
    others[twins] = -2.0
    nearest = int(others.argmax())
    return {"norm": round(float(weight[token_id].norm()), 4), "twins": len(twins),
            "twin_tokens": tokenizer.convert_ids_to_tokens(twins[:show]),
            "nearest": tokenizer.convert_ids_to_tokens(nearest), "nearest_cosine": round(float(others[nearest]), 4)}


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    import torch

    from agents.models import load_model_and_tokenizer
    from agents.tool_warmup import tool_tag_ids

    model, tokenizer = load_model_and_tokenizer(args.model, device="cpu", dtype="float32", threads=1)
    if args.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.adapter).merge_and_unload()
    ids = tool_tag_ids(tokenizer)
    if not ids:
        print(f"{args.model}: no tool-call tag is one token of its vocabulary; nothing to compare")
    layers = {"input embedding": model.get_input_embeddings().weight,
              "output layer": model.get_output_embeddings().weight}
    report = {}
    with torch.no_grad():
        for token_id in ids:
            tag = tokenizer.convert_ids_to_tokens(token_id)
            report[tag] = {layer: row_report(weight, token_id, tokenizer, args.twin_cosine, args.show)
                           for layer, weight in layers.items()}
    adapter = f" + {args.adapter}" if args.adapter else ""
    print(f"{args.model}{adapter}: tool-call tag rows (twins: other rows with cosine >= {args.twin_cosine})")
    print("| tag | layer | norm | twins | e.g. | nearest other row (cosine) |")
    print("| --- | --- | ---: | ---: | --- | --- |")
    for tag, rows in report.items():
        for layer, row in rows.items():
            print(f"| `{tag}` | {layer} | {row['norm']:.3f} | {row['twins']} | {' '.join(row['twin_tokens'])} | "
                  f"`{row['nearest']}` ({row['nearest_cosine']:.4f}) |")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "adapter": args.adapter, "rows": report},
                                              indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
