"""What the book's pages show: records read back, tables, sentences, figures, the browser check."""
