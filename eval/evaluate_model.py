"""Evaluate a checkpoint on a task; writes metrics.json (with a manifest) and metrics.md to --output_dir.

Same as `hf-llm eval`. `--task` names the stage whose artifact is measured. Examples (from the repository root):

```bash
python eval/evaluate_model.py --model_name_or_path outputs/pretrain --task pretrain \
    --dataset_name pydocs --split test --output_dir outputs/eval/pretrain
python eval/evaluate_model.py --model_name_or_path outputs/classifier --task classifier \
    --dataset_name pydocs --split test --output_dir outputs/eval/classifier
python eval/evaluate_model.py --model_name_or_path outputs/sft --task sft \
    --dataset_name pydocs --split test --max_new_tokens 64 --output_dir outputs/eval/sft
python eval/evaluate_model.py --model_name_or_path outputs/reward --task reward \
    --dataset_name pydocs --split test --output_dir outputs/eval/reward
```

Flags: `python eval/evaluate_model.py --help` (`hf_llm.evaluation.EvaluationArguments` and
`hf_llm.data.DataArguments`). A mistake in them ends in one line `evaluate_model.py: error: ...` and exit code 2.
"""

from hf_llm.errors import exit_on_user_error
from hf_llm.evaluation.evaluate_model import main, summary

if __name__ == "__main__":
    with exit_on_user_error("evaluate_model.py"):
        print(summary(main()))
