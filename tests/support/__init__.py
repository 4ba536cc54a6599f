"""What the project's own tests share: job records to start from, a paced model, and helpers that
launch and watch real jobs. Not shipped in the package."""
