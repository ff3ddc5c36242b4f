"""Work over many files: vocoding, generating, schedule search, the demo."""
