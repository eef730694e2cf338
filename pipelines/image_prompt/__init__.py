"""Image prompts (issue 13): CLIP image embeddings steering the prompt's token embeddings
(`guidance` and `mapping`: pure functions), the CLIP vision model that makes them (`vision`),
their checks against a model's text encoder from configs alone (`checks`), and their use on a
batch of build tiles (`encode`) and on a canvas's text regions (`canvas`). docs/image-prompts.md
says what each setting does."""
