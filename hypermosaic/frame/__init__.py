"""`hypermosaic frame` (issue 14, in progress): from a photo of an empty picture frame to a print
file: the frame's geometry and print sizes, the print file writer, colour correction."""
