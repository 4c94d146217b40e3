package queue

// Moving a standalone store into a cluster.
//
// nats-server keeps a standalone store's streams under
// <store>/jetstream/<account>/streams/. A server started clustered over
// that store recovers them from disk, finds no assignment for them in the
// cluster's meta group, and deletes them as orphans about 30 s after the
// meta group recovers (jetstream_cluster.go, checkForOrphans). jetrelay
// therefore never starts clustered over standalone data: it carries every
// message of every stream itself, in three steps, each of which survives
// a kill -9 and is resumed by the next start.
//
//  1. Aside (prepareStore, before the clustered server starts). The store
//     dir data_dir/nats is renamed to data_dir/nats.migrating.
//  2. Export. A private standalone server (no listener) is started on
//     nats.migrating; every stream's configuration and every message
//     (subject, headers, data, original time) is written in sequence order
//     to data_dir/nats-migrate.export.tmp, which is fsynced and renamed to
//     nats-migrate.export. Then nats.migrating is renamed to
//     nats.standalone-<UTC time>: kept, never deleted, for the operator.
//  3. Import (importPending, from Open, once the clustered server is up and
//     the cluster formed). Each stream is created from its exported
//     configuration with this node's replicas unless it exists already,
//     and each message is re-published into it with
//     Nats-Msg-Id jrmig-<export id>-<stream>-<original seq>. Every window
//     of acknowledged publishes is recorded in data_dir/nats-migrate.progress
//     (fsynced); a restart resumes after the recorded window. When all is
//     imported the export file is removed, then the progress file.
//
// Standalone data is recognised by the store layout, which every jetrelay
// version has written the same way: a stream directory under
// jetstream/<account>/streams/ and no cluster meta group directory
// (jetstream/$SYS/_js_/_meta_), which a clustered server creates on its
// first start, before any stream. A pending migration (nats.migrating or
// the export file present) also refuses a standalone start: the new store
// would take mail the import cannot see.
import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"
)

// Names under data_dir used by the migration.
const (
	storeDirName       = "nats"
	migratingDirName   = "nats.migrating"
	asideDirPrefix     = "nats.standalone-"
	exportFileName     = "nats-migrate.export"
	progressFileName   = "nats-migrate.progress"
	asideTimeLayout    = "20060102T150405Z"
	metaGroupRelPath   = "jetstream/$SYS/_js_/_meta_"
	jetstreamDirName   = "jetstream"
	streamsDirName     = "streams"
	systemAccountDir   = "$SYS"
	migrateEventLogKey = "nats_migrate"
)

// ErrMigrationPending is returned by a standalone start over a data_dir
// whose move into a cluster has begun.
var ErrMigrationPending = errors.New("queue: a move of this data_dir into a cluster is under way")

// prepareStore runs before the embedded server starts on opts.DataDir.
// Clustered: moves standalone data aside and exports it (steps 1 and 2),
// or finishes either after a crash. Standalone: refuses a data_dir whose
// migration is pending.
func prepareStore(opts Options) error {
	dir := opts.DataDir
	migrating := filepath.Join(dir, migratingDirName)
	export := filepath.Join(dir, exportFileName)
	pending := exists(migrating) || exists(export)
	if opts.Cluster == nil {
		if pending {
			return fmt.Errorf("%w (%s): start it with nats.cluster set to finish the move",
				ErrMigrationPending, filepath.Join(dir, exportFileName))
		}
		return nil
	}
	log := opts.Logger.With().Str("event", migrateEventLogKey).Logger()
	if exists(export) {
		if standaloneData(filepath.Join(dir, storeDirName)) {
			return fmt.Errorf("queue: %s holds standalone data and an export %s is waiting to be imported; "+
				"move one of them away", filepath.Join(dir, storeDirName), export)
		}
		return finishAside(dir, log)
	}
	if !exists(migrating) {
		if !standaloneData(filepath.Join(dir, storeDirName)) {
			return nil
		}
		log.Warn().Str("step", "aside").Str("path", migrating).
			Msg("standalone store found on a clustered start: moving it into the cluster")
		if err := os.Rename(filepath.Join(dir, storeDirName), migrating); err != nil {
			return fmt.Errorf("queue: move the standalone store aside: %w", err)
		}
		if err := syncDir(migrating); err != nil {
			return err
		}
	}
	// A progress file of an earlier migration must not skip messages of this one.
	if err := removeFile(filepath.Join(dir, progressFileName)); err != nil {
		return err
	}
	start := time.Now()
	end, err := exportStandalone(migrating, export, log)
	if err != nil {
		return fmt.Errorf("queue: export the standalone store %s: %w", migrating, err)
	}
	log.Info().Str("step", "export").Int("streams", end.Streams).Int("messages", end.Messages).
		Int64("duration_ms", time.Since(start).Milliseconds()).Str("path", export).Msg("standalone store exported")
	return finishAside(dir, log)
}

// finishAside renames nats.migrating (exported) to nats.standalone-<time>.
func finishAside(dir string, log zerolog.Logger) error {
	migrating := filepath.Join(dir, migratingDirName)
	if !exists(migrating) {
		return nil
	}
	aside := filepath.Join(dir, asideDirPrefix+time.Now().UTC().Format(asideTimeLayout))
	if err := os.Rename(migrating, aside); err != nil {
		return fmt.Errorf("queue: keep the standalone store: %w", err)
	}
	log.Info().Str("step", "aside").Str("path", aside).Msg("standalone store kept (not used any more)")
	return syncDir(aside)
}

// standaloneData reports whether storeDir holds a stream and no cluster
// meta group: the layout of a store only a standalone server has used.
func standaloneData(storeDir string) bool {
	if exists(filepath.Join(storeDir, metaGroupRelPath)) {
		return false
	}
	accounts, err := os.ReadDir(filepath.Join(storeDir, jetstreamDirName))
	if err != nil {
		return false
	}
	for _, a := range accounts {
		if !a.IsDir() || a.Name() == systemAccountDir {
			continue
		}
		streams, err := os.ReadDir(filepath.Join(storeDir, jetstreamDirName, a.Name(), streamsDirName))
		if err == nil && len(streams) > 0 {
			return true
		}
	}
	return false
}

// importPending imports a finished export into the cluster (step 3); it
// does nothing when no export is waiting.
func (q *Queue) importPending(ctx context.Context) error {
	if q.ns == nil || q.opts.Cluster == nil {
		return nil
	}
	export := filepath.Join(q.opts.DataDir, exportFileName)
	if !exists(export) {
		return removeFile(filepath.Join(q.opts.DataDir, progressFileName))
	}
	return q.importExport(ctx, importConfig{})
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// removeFile removes path (absent is fine) and syncs its directory.
func removeFile(path string) error {
	if err := os.Remove(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	return syncDir(path)
}

// syncDir fsyncs the directory holding path, so that a rename or removal
// of path survives a power cut.
func syncDir(path string) error {
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
