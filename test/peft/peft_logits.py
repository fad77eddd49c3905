"""PEFT's side of the compatibility test (test/adapt-peft.test.ts): load an OLMoE base with transformers, an adapter with
PEFT, and print the logits of the given ids as JSON. With --save-random DIR, instead make a LoRA with PEFT's own
LoraConfig (B filled with random values), save it with save_pretrained and print its logits.
usage: peft_logits.py BASE ADAPTER IDS | peft_logits.py BASE --save-random DIR IDS TARGETS"""
import json
import sys

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM


def logits(model, ids):
    with torch.no_grad():
        out = model(torch.tensor([ids]))
    return out.logits[0].tolist()


def main():
    base_dir = sys.argv[1]
    base = AutoModelForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32)
    base.eval()
    if sys.argv[2] == "--save-random":
        out_dir, ids, targets = sys.argv[3], json.loads(sys.argv[4]), sys.argv[5].split(",")
        config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets, task_type="CAUSAL_LM")
        model = get_peft_model(base, config)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.copy_(0.2 * (torch.rand(param.shape, generator=generator) - 0.5))
        model.eval()
        model.save_pretrained(out_dir)
        print(json.dumps({"logits": logits(model, ids)}))
        return
    adapter_dir, ids = sys.argv[2], json.loads(sys.argv[3])
    model = PeftModel.from_pretrained(base, adapter_dir)
    model.eval()
    modules = sorted({name.rsplit(".lora_", 1)[0] for name, _ in model.named_parameters() if ".lora_A." in name})
    print(json.dumps({"logits": logits(model, ids), "modules": modules}))


main()
