"""Image prompts (issue 13, in progress): CLIP image embeddings steering the prompt's token
embeddings (`guidance`: pure functions), and the CLIP vision model that makes them (`vision`)."""
