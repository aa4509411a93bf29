"""Evaluate a checkpoint on a task; writes metrics.json (with a manifest) and metrics.md to --output_dir.

Same as `hf-llm eval`. Examples (from the repository root):

```bash
python eval/evaluate_model.py --model_name_or_path outputs/pretrain --task pretrain \
    --dataset_name pydocs --split test --output_dir outputs/eval/pretrain
python eval/evaluate_model.py --model_name_or_path outputs/classifier --task classification \
    --dataset_name pydocs --split test --output_dir outputs/eval/classifier
python eval/evaluate_model.py --model_name_or_path outputs/sft --task instruction \
    --dataset_name pydocs --split test --max_new_tokens 64 --output_dir outputs/eval/sft
python eval/evaluate_model.py --model_name_or_path outputs/reward --task reward \
    --dataset_name pydocs --split test --output_dir outputs/eval/reward
```

Flags: `python eval/evaluate_model.py --help` (`hf_llm.evaluation.EvaluationArguments` and
`hf_llm.data.DataArguments`).
"""

import sys

from hf_llm.cli import run_eval

if __name__ == "__main__":
    sys.exit(run_eval(sys.argv[1:]))
