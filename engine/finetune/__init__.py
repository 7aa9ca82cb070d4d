"""Fine-tuning of quantized models: Q-SFT (full-parameter, in the quantized weight space) and a LoRA baseline.

* data.py, template.py, split.py, packing.py — training examples from files or the Hub, tokenized with the
  model's chat template and a loss mask, split into train / held-out by document, packed into padding-free rows;
* preview.py — the `preview_dataset` job: the first examples as the trainer will see them, torch-free;
* qlinear.py, optim.py — the trainable view of a QuantLinear and the optimizers that change its codes by
  whole steps (inside the backward pass) and its scales / zeros by Adam;
* lora.py — frozen quantized weights plus low-rank adapters (the QLoRA recipe), for comparison;
* loss.py, qsft.py, checkpoint.py — chunked cross-entropy, the trainer, exact-resume checkpoints;
* job.py — the `finetune` job behind `bitsmith finetune`.
"""
