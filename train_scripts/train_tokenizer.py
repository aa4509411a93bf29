"""Train a byte-level BPE tokenizer on a text dataset and save it as a `PreTrainedTokenizerFast`.

    python train_scripts/train_tokenizer.py --dataset_name pydocs --vocab_size 4096 --output_dir outputs/tokenizer
    python train_scripts/train_tokenizer.py --config train_scripts/configs/tokenizer/pydocs.yaml

Any `--dataset_name` works (Hub id, local .txt/.json/.jsonl/.csv/.tsv/.parquet file or folder, `pydocs`); the
tokenizer learns from the `train` split only, so validation and test text stays unseen. The output directory
loads with `AutoTokenizer.from_pretrained`, and also holds `recipe.yaml` (the resolved flags, a valid `--config`)
and `data_fingerprint.json`.
"""

from dataclasses import dataclass, field

from datasets import DatasetDict
from trl import TrlParser

from hf_llm.data import DataArguments, load_dataset_from_args, save_data_fingerprint
from hf_llm.errors import UsageError, exit_on_user_error
from hf_llm.hub import push_output_dir
from hf_llm.tokenizer import train_tokenizer
from hf_llm.training import save_recipe


@dataclass
class TokenizerArguments:
    """
    Args:
        output_dir (`str`): Where the tokenizer is saved.
        vocab_size (`int`, defaults to 4096): Vocabulary size, special tokens included.
        min_frequency (`int`, defaults to 2): A pair must occur this often to be merged.
        model_max_length (`int`, *optional*): Context length stored in the tokenizer config.
        push_to_hub (`bool`, defaults to `False`): Push the tokenizer to `hub_model_id`.
        hub_model_id (`str`, *optional*): Hub repo id; required with `push_to_hub`.
        hub_private_repo (`bool`, *optional*): Create the repo private.
        hub_token (`str`, *optional*): Hub token; defaults to the cached login or `HF_TOKEN`.
    """

    output_dir: str = field(metadata={"help": "Where the tokenizer is saved."})
    vocab_size: int = field(default=4096, metadata={"help": "Vocabulary size, special tokens included."})
    min_frequency: int = field(default=2, metadata={"help": "Minimum pair frequency for a merge."})
    model_max_length: int | None = field(default=None, metadata={"help": "Context length for the tokenizer config."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push the tokenizer to the Hub."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repo id (with --push_to_hub)."})
    hub_private_repo: bool | None = field(default=None, metadata={"help": "Create the Hub repo private."})
    hub_token: str | None = field(default=None, metadata={"help": "Hub token (default: cached login or HF_TOKEN)."})

    def __post_init__(self):
        if self.push_to_hub and not self.hub_model_id:
            raise UsageError("--push_to_hub needs --hub_model_id, e.g. --hub_model_id your-name/pydocs-bpe-4096.")


def main(data_args: DataArguments, tokenizer_args: TokenizerArguments) -> None:
    ################
    # Dataset
    ################
    dataset = load_dataset_from_args(data_args, "text")
    train = dataset["train"]
    print(f"Training on {len(train)} texts of {data_args.dataset_name} (split 'train')")

    ################
    # Training
    ################
    tokenizer = train_tokenizer(
        train,
        vocab_size=tokenizer_args.vocab_size,
        min_frequency=tokenizer_args.min_frequency,
        model_max_length=tokenizer_args.model_max_length,
    )

    ################
    # Save and push
    ################
    tokenizer.save_pretrained(tokenizer_args.output_dir)
    save_recipe(tokenizer_args.output_dir, data_args, tokenizer_args)
    save_data_fingerprint(tokenizer_args.output_dir, data_args, DatasetDict(train=train))
    print(f"Saved a tokenizer with {len(tokenizer)} tokens to {tokenizer_args.output_dir}")
    if tokenizer_args.push_to_hub:
        url = push_output_dir(
            tokenizer_args.output_dir,
            tokenizer_args.hub_model_id,
            private=bool(tokenizer_args.hub_private_repo),
            token=tokenizer_args.hub_token,
            commit_message="Train tokenizer",
        )
        print(f"Pushed the tokenizer, its recipe and data fingerprint to {url}")


if __name__ == "__main__":
    parser = TrlParser((DataArguments, TokenizerArguments))
    with exit_on_user_error("train_tokenizer.py"):
        main(*parser.parse_args_and_config())
