"""Train a byte-level BPE tokenizer on a text dataset and save it as a `PreTrainedTokenizerFast`.

    python train_scripts/train_tokenizer.py --dataset_name pydocs --vocab_size 4096 --output_dir outputs/tokenizer
    python train_scripts/train_tokenizer.py --config train_scripts/configs/tokenizer/pydocs.yaml

Any `--dataset_name` works (Hub id, local .txt/.json/.jsonl/.csv/.tsv/.parquet file or folder, `pydocs`); the
tokenizer learns from the `train` split only, so validation and test text stays unseen. The output directory
loads with `AutoTokenizer.from_pretrained`, and also holds `recipe.yaml` (the resolved flags, a valid `--config`)
and `data_fingerprint.json`.
"""

from datasets import DatasetDict

from hf_llm.command_output import check_command_output_dir
from hf_llm.data import DataArguments, load_dataset_from_args, save_data_fingerprint
from hf_llm.errors import exit_on_user_error
from hf_llm.hub import push_output_dir
from hf_llm.parser import RecipeParser
from hf_llm.tokenizer import TOKENIZER_OUTPUTS, TokenizerArguments, train_tokenizer
from hf_llm.training import save_recipe


def main(data_args: DataArguments, tokenizer_args: TokenizerArguments) -> None:
    """Train the tokenizer on the train split of `--dataset_name`, save it with its recipe and data fingerprint."""
    # Never over a user's files or into the data's folder; an earlier tokenizer of this script's is replaced.
    check_command_output_dir(
        tokenizer_args.output_dir,
        inputs={"--dataset_name": data_args.dataset_name},
        overwrite_output_dir=tokenizer_args.overwrite_output_dir,
        example_suffix="-tokenizer",
        own_outputs=TOKENIZER_OUTPUTS,
    )

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
    parser = RecipeParser((DataArguments, TokenizerArguments))
    with exit_on_user_error("train_tokenizer.py"):
        main(*parser.parse_args_and_config())
