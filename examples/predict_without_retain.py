"""Predict with a folder written by `retain export`, using transformers and safetensors only
(no retain import). Usage:

    python examples/predict_without_retain.py EXPORT_DIR "a text" "another text" ...

prints one JSON line per text: the class and its score, as `retain predict` gives them.
With --peft BASE_DIR, the model is the pretrained BASE_DIR with EXPORT_DIR/adapter loaded by
peft instead of the merged model (methods that export an adapter; a Share adapter needs retain
imported, which registers its type with peft).
"""

import argparse
import importlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import load_file


def pool(hidden, mask, mode):
    if mode == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)
    if mode == "cls":
        return hidden[:, 0]
    last = mask.long().sum(1).clamp_min(1) - 1  # "last": the last non-padding token
    return hidden[torch.arange(hidden.shape[0]), last]


def logits(features, head, info):
    f = features.double()
    transform = info["head"]["transform"]
    if transform == "normalize":
        f = F.normalize(f, dim=-1)
    elif transform == "relu_projection":
        f = F.relu(f @ head["projection"].double())
    scores = f @ head["weight"].double().T + head["bias"].double()
    out = torch.full((len(f), len(info["class_names"])), float("-inf"), dtype=torch.float64)
    for r, c in enumerate(head["row_class"].tolist()):
        out[:, c] = torch.maximum(out[:, c], scores[:, r])
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("export_dir")
    p.add_argument("texts", nargs="+")
    p.add_argument("--peft", metavar="BASE_DIR", help="load BASE_DIR plus the peft adapter")
    args = p.parse_args()
    transformers.logging.set_verbosity_error()  # BERT's pooler is not exported: it is unused
    root = Path(args.export_dir)
    info = json.loads((root / "retain.json").read_text())
    cls = getattr(transformers, info["model_class"])
    if args.peft:
        from peft import PeftModel

        peft_type = json.loads((root / "adapter" / "adapter_config.json").read_text())["peft_type"]
        if peft_type in ("PLATE", "SHARE"):  # retain's own peft methods: retain registers them
            importlib.import_module("retain.methods." + peft_type.lower())

        model = PeftModel.from_pretrained(cls.from_pretrained(args.peft), root / "adapter")
    else:
        model = cls.from_pretrained(root / "model")
    model.eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(root / "model")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    head = load_file(str(root / "head.safetensors"))
    batch = tokenizer(args.texts, padding=True, truncation=True,
                      max_length=info["max_length"], return_tensors="pt")
    with torch.no_grad():
        encoder = model.get_decoder() if info["modality"] == "causal-lm" else model
        layers = info.get("feature_layers", 1)  # the last hidden states the head reads
        out = encoder(**batch, output_hidden_states=True)
        states = (*out.hidden_states[-layers:-1], out.last_hidden_state)
        pooled = [pool(h, batch["attention_mask"], info["pooling"]) for h in states]
        features = pooled[0] if layers == 1 else torch.cat(
            [torch.nn.functional.normalize(f, dim=-1) for f in pooled], -1)
        scores = logits(features, head, info)
    for text, row in zip(args.texts, scores, strict=True):
        best = int(row.argmax())
        print(json.dumps({"text": text, "class": info["class_names"][best],
                          "score": float(row[best])}))


if __name__ == "__main__":
    main()
