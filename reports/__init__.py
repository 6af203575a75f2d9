"""HTML and PNG reports of an analysis. Reports never call parsers: they take results."""
