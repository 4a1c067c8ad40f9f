export interface DashboardFile {
  type: string;
  body: Buffer;
}

/** The content type of a file name, by its extension. */
export function contentType(name: string): string;

/**
 * The dashboard's files, read once from `dir` (default: the package's built dist/): `/` and
 * `/index.html` → index.html, `/assets/<name>` → the built assets; undefined for any other path.
 */
export function dashboardFiles(dir?: string): (path: string) => DashboardFile | undefined;
